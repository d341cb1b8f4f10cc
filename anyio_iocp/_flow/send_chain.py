"""The send side of every engine's stream, written once.

:class:`WriteBehind` is the bookkeeping that every engine's stream needs for
``sendcap > 1``: sends that complete after ``send()`` returned, their first
error, and the tasks that wait for room (the sender, and a task closing the
stream).  The readiness engine builds its own sending on it.

:class:`SendChain` is the whole send path of the completion engines:

* A send first goes straight to the socket without blocking when nothing is
  pending.  What does not fit is posted.
* With ``sendcap == 1`` ``send()`` waits for that completion; a cancelled task
  cancels it in the kernel and waits for its completion before Cancelled
  propagates, so nothing of it can go out after a later send.
* With ``sendcap > 1`` ``send()`` hands the data over and returns while fewer
  than ``sendcap`` sends are pending, otherwise it first waits for the oldest
  to complete.  The data is copied unless it is an immutable ``bytes`` object,
  so the caller may reuse a mutable buffer at once.  An error of such a
  *write-behind* send is recorded when it completes (the first one only) and
  raised by the next operation on the stream.
* ``close()`` first waits, bounded by :data:`CLOSE_DRAIN_SECONDS` and
  cancellable, for write-behind sends to go out, then cancels every operation
  still in flight, waits for all their completions (memory lent to the kernel
  stays alive until then) and closes the socket, also when cancelled.

The engine's stream supplies the primitives: post one send that ``send()``
waits for, hand a write-behind send over (posted at once, or queued in
``_queued`` and posted later in a chain), what a completed send did, and the
operations to drain at close.  "Flush" means one thing here: waiting until
write-behind sends have gone out (:meth:`WriteBehind.flush`).
"""

from __future__ import annotations

import errno
import socket
from abc import abstractmethod
from typing import Any, Protocol

import trio
from trio import lowlevel  # (faster than trio.lowlevel: see _streams/__init__.py)
from trio.lowlevel import Task

from anyio_iocp._flow.look_after_send import LooksAfterSends
from anyio_iocp._interface import trace as _trace
from anyio_iocp._interface.budget import ScheduleBudget
from anyio_iocp._interface.parking import park_among, wake_all

#: how long close() waits for pending write-behind sends before cutting them off
CLOSE_DRAIN_SECONDS = 10.0
#: largest single send handed to the kernel (the length fields are 32 bits)
MAX_SEND = 1 << 30
#: flags of the direct send (no SIGPIPE where the platform has the flag)
SEND_NOW_FLAGS: int = getattr(socket, "MSG_NOSIGNAL", 0)
#: what :meth:`SendChain._send_failure` returns for a send that was cancelled
#: (by ``close()``, or by the engine after an earlier send failed): not an error
SEND_CANCELLED = OSError(errno.ECANCELED, "send cancelled")


class CompletionEngine(Protocol):
    """What the shared stream code asks of a completion engine."""

    #: the run's schedule budget (strict: no yield before a wait)
    budget: ScheduleBudget
    #: what the run's looks right after a send found (look_after_send)
    looks: LooksAfterSends

    @property
    def closed(self) -> bool: ...

    def check_open(self) -> None: ...

    async def wait(self, op: Any) -> None: ...

    async def wait_or_cancel(self, op: Any) -> None: ...

    async def drain(self, ops: list[Any]) -> None: ...


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
            # (raised again at each call: without the traceback of the last time)
            raise self._send_error.with_traceback(None)

    async def _raise_unreported_send_error_after_cancel_check(self) -> None:
        """As :meth:`_raise_unreported_send_error`, after the call's cancel
        check (a Cancelled leaves the error unreported, for the next call or
        close()).  Callers test ``_send_error`` first: this runs once per
        message otherwise."""
        await lowlevel.checkpoint_if_cancelled()
        self._raise_unreported_send_error()

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

    def _before_send_wait(self) -> None:
        """A task is about to wait for pending sends: an engine that does not
        report every completion must report the next one (io_uring's quiet
        sends)."""

    async def _wait_sends_below(self, limit: int) -> None:
        """Wait until fewer than ``limit`` sends are pending, one failed, or the
        stream is closing (cancellable: nothing is handed over while waiting)."""
        while self._pending_sends() >= limit and self._send_error is None and not self._closing:
            self._before_send_wait()
            await park_among(self._send_waiters)

    async def send_eof(self) -> None:
        """Let pending sends go out, then shut down the sending side."""
        await self.flush()
        self.sock.shutdown(socket.SHUT_WR)

    async def flush(self) -> None:
        """Wait until write-behind sends have gone out; raise their error."""
        await self._wait_sends_below(1)
        self._check_send_error()


class SendChain(WriteBehind):
    """The send path of a completion engine's stream (see the module's notes)."""

    _engine: CompletionEngine
    counters: Any

    def _init_send_chain(self) -> None:
        #: write-behind data accepted and not yet posted (engines that post
        #: once per scheduler pass), oldest first
        self._queued: list[bytes | memoryview] = []
        #: sends posted and not yet completed, oldest first
        self._sending: list[Any] = []
        self._init_write_behind()

    # -- the engine's primitives ----------------------------------------------

    @abstractmethod
    def _post_send(self, data: memoryview) -> Any:
        """Post one send of ``data`` that a task waits for (``sendcap == 1``),
        appended to ``_sending``; return its operation."""

    @abstractmethod
    def _sent(self, op: Any) -> int:
        """The bytes the completed send ``op`` sent, or raise its error."""

    @abstractmethod
    def _hand_over(self, data: bytes | memoryview) -> None:
        """Hand a write-behind send over: post it (``_sending``), or queue it
        (``_queued``) to be posted later.  A failure to post breaks the stream."""

    @abstractmethod
    def _was_write_behind(self, op: Any) -> bool:
        """The completed send ``op`` was a write-behind send (called once per send)."""

    @abstractmethod
    def _send_failure(self, op: Any) -> OSError | None:
        """None if the write-behind send ``op`` sent every byte, otherwise its
        error (a short send is one), or :data:`SEND_CANCELLED`."""

    @abstractmethod
    def _send_result(self, op: Any) -> int:
        """The completed send's result as the trace reports it."""

    @abstractmethod
    def _write_behind_pending(self) -> int:
        """Write-behind sends not yet completed (queued or posted)."""

    @abstractmethod
    def _operations(self) -> list[Any]:
        """Every operation of the stream that may be in flight (receives and
        sends), for ``close()`` to cancel and drain."""

    @abstractmethod
    def _release(self) -> None:
        """After the drain at close: drop the operations, and anything the
        engine holds for the socket that is about to be closed."""

    def _post_queued_later(self) -> None:
        """Queued sends can go now: post them (the engine may wait for the
        end of the scheduler pass)."""

    def _send_now(self, data: memoryview) -> int:
        """With nothing of the stream's pending: send what can go without
        waiting, and say how much did.  A direct non-blocking send here; an
        engine may hand the bytes to the kernel instead (io_uring's quiet
        sends), and then says all of them went.  Either way it sets
        ``send_pass``: a receive in this pass may skip its first look
        (look_after_send); a send that then waits ends in a later pass."""
        self.send_pass = self._engine.budget.passes
        try:
            sent = self.sock.send(data, SEND_NOW_FLAGS)
        except BlockingIOError:
            return 0
        self.counters.direct_send += 1
        return sent

    # -- sending --------------------------------------------------------------

    def _pending_sends(self) -> int:
        return len(self._queued) + len(self._sending)

    def check_engine(self) -> None:
        if self._engine.closed:
            self._engine.check_open()

    def send_at_once(self, data: memoryview) -> int:
        # (after the caller's cancel check: a Cancelled loses no error)
        if self._engine.closed:
            self._engine.check_open()
        if self._send_error is not None:
            self._check_send_error()
        if self._queued or self._sending:
            return 0
        return self._send_now(data)  # all of it: no wait, the stream layer's budget decides

    async def send_rest(self, data: memoryview) -> None:
        if self.sendcap == 1:
            await self._send_and_wait(data)
            return
        await self._wait_sends_below(self.sendcap)
        self._check_send_error()
        self._check_not_closing()
        # The caller may reuse a mutable buffer as soon as send() returns.
        owned = data if isinstance(data.obj, bytes) else bytes(data)
        self._hand_over(owned)
        self._queued_send(len(owned))

    async def _send_and_wait(self, data: memoryview) -> None:
        await self._wait_sends_below(1)  # write-behind sends of an earlier sendcap
        self._check_send_error()
        while True:
            self._check_not_closing()
            op = self._post_send(data[:MAX_SEND])
            await self._engine.wait_or_cancel(op)
            data = data[self._sent(op) :]
            if not data:
                return
            await lowlevel.checkpoint_if_cancelled()

    def on_send_complete(self, op: Any) -> None:
        """A send completed (a stream's sends complete in order)."""
        sending = self._sending
        if op in sending:
            sending.remove(op)
        write_behind = self._was_write_behind(op)
        failure = self._send_failure(op) if write_behind else None
        if failure is not None:
            # Nobody waits for this send: remember its first error for the
            # next operation.  Bytes cannot be skipped on a stream, so
            # nothing queued behind it goes out.
            if self._send_error is None and failure is not SEND_CANCELLED:
                self._send_error = failure
            if self._send_error is not None:
                self._queued.clear()
        elif not sending and self._queued:
            self._post_queued_later()
        if write_behind and _trace.active:
            self._trace_send_completed(self._send_result(op))
        self._wake_sender()

    # -- closing --------------------------------------------------------------

    async def close(self) -> None:
        """Wait (bounded, cancellable) for write-behind sends, then cancel and
        drain every operation in flight and close the socket, even when cancelled."""
        try:
            # Write-behind sends belong to nobody but the stream: let them go
            # out.  A send that a task is waiting for is cancelled right away
            # (that task gets ClosedResourceError).
            if self._write_behind_pending() and self._send_error is None:
                with trio.move_on_after(CLOSE_DRAIN_SECONDS):
                    while self._write_behind_pending() and self._send_error is None:
                        await self._wait_sends_below(self._pending_sends())
        finally:
            # from now on nothing is posted, so no operation can reach the
            # descriptor after it is closed (another socket may reuse it)
            self._closing = True
            self._wake_sender()  # a sender waiting for room learns of the close
            self._queued.clear()
            pending = [op for op in self._operations() if not op.done]
            if pending:
                with trio.CancelScope(shield=True):
                    await self._engine.drain(pending)
            self._release()
            self._before_socket_close()  # (no checkpoint from here to the close)
            self.sock.close()
        self._raise_unreported_send_error()

    def _before_socket_close(self) -> None:
        """Called by :meth:`close` just before the socket closes, with
        nothing posted any more: an engine whose receives may wait outside
        its operations (in Trio's epoll) wakes them here."""
