"""Bookkeeping that every engine's stream needs for ``sendcap > 1``: sends that
complete after ``send()`` returned, their first error, and the tasks that wait
for room (the sender, and a task closing the stream).  The engines differ only
in what counts as pending."""

from __future__ import annotations

import errno
import socket
from abc import abstractmethod

from trio.lowlevel import Task

from anyio_iocp._interface import trace as _trace
from anyio_iocp._interface.parking import park_among, wake_all


class WriteBehind:
    sock: socket.socket

    def _init_write_behind(self) -> None:
        #: the first error of a send that completed after its send() returned
        self._send_error: OSError | None = None
        self._send_error_reported = False
        self._send_waiters: list[Task] = []
        #: set when close() starts cancelling: nothing more may be handed over
        self._closing = False

    @abstractmethod
    def _pending_sends(self) -> int:
        """Sends handed over and not yet completed."""

    sendcap: int
    sends_queued: int

    def _queued_send(self, nbytes: int) -> None:
        """A send returned before its bytes left: count it, and trace it."""
        self.sends_queued += 1
        if _trace.active:
            self._trace_send("send.queued", f"{nbytes} bytes queued", bytes=nbytes)

    def _trace_send_completed(self, result: int) -> None:
        """A write-behind send completed (callers check ``_trace.active``)."""
        self._trace_send(
            "send.completed", f"write-behind send completed with {result}", result=result
        )

    def _trace_send(self, kind: str, what: str, **fields: int) -> None:
        fd, pending = self.sock.fileno(), self._pending_sends()
        _trace.emit(
            kind,
            f"fd {fd}: {what}, {pending} of sendcap {self.sendcap} pending",
            fd=fd,
            pending=pending,
            sendcap=self.sendcap,
            **fields,
        )

    def _check_send_error(self) -> None:
        """Raise the pending send error, if any (the stream is broken from then on)."""
        if self._send_error is not None:
            self._send_error_reported = True
            raise self._send_error

    def _raise_unreported_send_error(self) -> None:
        """An error nobody has seen yet is raised once, by the next operation
        (a receive too) or at close: it is never lost."""
        if self._send_error is not None and not self._send_error_reported:
            self._check_send_error()

    def _check_not_closing(self) -> None:
        if self._closing:
            raise OSError(errno.EBADF, "stream closed")

    def _wake_sender(self) -> None:
        waiters = self._send_waiters
        if waiters:  # (checked here: every send completion comes through)
            wake_all(waiters)

    async def _wait_sends_below(self, limit: int) -> None:
        """Wait until fewer than ``limit`` sends are pending, one failed, or the
        stream is closing (cancellable: nothing is handed over while waiting)."""
        while self._pending_sends() >= limit and self._send_error is None and not self._closing:
            await park_among(self._send_waiters)

    async def send_eof(self) -> None:
        """Let pending sends go out, then shut down the sending side."""
        await self.flush()
        self.sock.shutdown(socket.SHUT_WR)

    async def flush(self) -> None:
        """Wait until write-behind sends have gone out; raise their error."""
        await self._wait_sends_below(1)
        self._check_send_error()
