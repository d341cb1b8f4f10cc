"""Bookkeeping that every engine's stream needs for ``sendcap > 1``: sends that
complete after ``send()`` returned, their first error, and the one task that
waits for room.  The engines differ only in what counts as pending."""

from __future__ import annotations

import socket
from abc import abstractmethod

import trio
from trio.lowlevel import Abort, Task


class WriteBehind:
    sock: socket.socket

    def _init_write_behind(self) -> None:
        #: the first error of a send that completed after its send() returned
        self._send_error: OSError | None = None
        self._send_error_reported = False
        self._send_waiter: Task | None = None

    @abstractmethod
    def _pending_sends(self) -> int:
        """Sends handed over and not yet completed."""

    def _check_send_error(self) -> None:
        """Raise the pending send error, if any (the stream is broken from then on)."""
        if self._send_error is not None:
            self._send_error_reported = True
            raise self._send_error

    def _raise_unreported_send_error(self) -> None:
        """At close: an error nobody has seen yet is not lost."""
        if self._send_error is not None and not self._send_error_reported:
            self._check_send_error()

    def _wake_sender(self) -> None:
        waiter = self._send_waiter
        if waiter is not None:
            self._send_waiter = None
            trio.lowlevel.reschedule(waiter)

    async def _wait_sends_below(self, limit: int) -> None:
        """Wait until fewer than ``limit`` sends are pending, or one failed
        (cancellable: nothing is handed over while waiting)."""
        while self._pending_sends() >= limit and self._send_error is None:
            self._send_waiter = trio.lowlevel.current_task()

            def abort(_: object) -> Abort:
                self._send_waiter = None
                return Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)

    async def send_eof(self) -> None:
        """Let pending sends go out, then shut down the sending side."""
        await self._wait_sends_below(1)
        self._check_send_error()
        self.sock.shutdown(socket.SHUT_WR)
