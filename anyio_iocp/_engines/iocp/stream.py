"""One connected stream on the IOCP engine: receive pools with Automatic Burst
Detection (recvburst), and concurrent sends (sendcap).

Receiving
---------
``receive()`` first takes bytes already received ahead, then bytes the socket
already holds (a direct non-blocking ``recv``: no operation is posted when
data is waiting), and only when there are none it posts ``WSARecv`` calls and
waits for the first.  Automatic Burst Detection decides how many: ``k``
receives, each with its own buffer.  Windows fills the overlapped receives of
a stream socket in the order they were posted, so their bytes come back in
order without the linking io_uring needs.  ``k`` starts at 1, grows by one
for every receive that completes full (the sender outruns the reader) and
shrinks by one for every receive that completes partly filled, within
``1..recvburst``.  While a burst lasts, the next pool is posted as soon as the
reader has taken what the previous one brought.  Bytes held ahead of the
reader are therefore bounded by ``k * buffersize``.  A new pool is posted only
once the previous one has completed entirely.

A cancelled ``receive()`` leaves its receives posted: their bytes go to the
next ``receive()``.  Nothing is lost, and nothing is cancelled in the kernel.

Sending
-------
A send first goes straight to the socket without blocking when nothing is in
flight.  What does not fit is posted with ``WSASend``.  With ``sendcap == 1``
``send()`` waits for that completion; a cancelled task cancels it with
``CancelIoEx`` and waits for its packet before Cancelled propagates, so
nothing of it can go out after a later send.

With ``sendcap > 1``, ``send()`` posts the data and returns while fewer than
``sendcap`` sends are in flight, otherwise it first waits for the oldest to
complete.  Windows sends the data of overlapped sends on one socket in the
order they were posted, so up to ``sendcap`` ``WSASend`` calls are in flight
at once.  The data is copied unless it is an immutable ``bytes`` object.  An
error of a send that completes after ``send()`` returned is raised by the
next operation on the stream; ``close()`` first waits (bounded, cancellable)
for such sends to go out, then cancels what is left and waits for every
packet before the socket is closed.
"""

from __future__ import annotations

import contextlib
import socket
from collections import deque
from typing import TYPE_CHECKING

import trio

from anyio_iocp._engines.iocp.winsock import ffi, ws2
from anyio_iocp._flow.send_chain import WriteBehind
from anyio_iocp._flow.stream_base import FlowStream
from anyio_iocp._interface import trace as _trace
from anyio_iocp._interface.settings import Tuning, Usage

if TYPE_CHECKING:
    from anyio_iocp._engines.iocp.engine import IocpEngine, Op

#: how long close() waits for pending write-behind sends before cutting them off
CLOSE_DRAIN_SECONDS = 10.0
#: largest single WSASend (WSABUF.len is 32 bits)
MAX_SEND = 1 << 30


class IocpStreamIO(WriteBehind, FlowStream):
    def __init__(self, engine: IocpEngine, sock: socket.socket, tuning: Tuning) -> None:
        sock.setblocking(False)  # for the direct calls; overlapped calls ignore it
        self._init_flow(sock, tuning, engine.counters)
        self._engine = engine
        # receive side
        self._posted: deque[Op] = deque()  # receives posted, in order
        self._ready: deque[bytes] = deque()  # bytes received ahead of the reader
        self._eof = False
        self._recv_error: OSError | None = None
        # send side: in flight, oldest first; write-behind ones also in _pipelined
        self._sending: deque[Op] = deque()
        self._pipelined: set[Op] = set()
        self._init_write_behind()

    # -- settings -------------------------------------------------------------

    def usage(self, name: str) -> Usage:
        if name == "sendcap":
            return Usage(self.sendcap, len(self._sending))
        if name == "recvburst":
            return Usage(self.recvburst, len(self._posted) + len(self._ready))
        if name == "buffersize":
            return Usage(self.buffersize, sum(map(len, self._ready)))
        raise ValueError(f"unknown stream setting {name!r}")

    # -- receiving ------------------------------------------------------------

    async def receive(self, max_bytes: int) -> bytes:
        self._engine.check_open()  # a stream kept past its run: a clear error
        self._raise_unreported_send_error()  # a write-behind send failed
        posted = self._posted
        if not self._ready and posted and not posted[0].done:
            await self._engine.wait(posted[0])
            self._collect()
            return self._take(max_bytes)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._collect()
        if not (self._ready or posted or self._eof or self._recv_error):
            try:
                data = self.sock.recv(min(max_bytes, self.buffersize))
            except BlockingIOError:
                self._check_send_error()
                self._post_pool()
                await self._engine.wait(posted[0])
                self._collect()
                return self._take(max_bytes)
            self.counters.direct_recv += 1
            if data:
                self.abd.observe(len(data) == self.buffersize)
                self._post_ahead()
            else:
                self._eof = True
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        data = self._take(max_bytes)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    def _post_pool(self) -> None:
        """Post k receives; the first must be posted, the rest are best effort."""
        self._check_not_closing()
        engine, size = self._engine, self.buffersize
        self._posted.append(engine.post_recv(self.sock, size))
        for _ in range(self.abd.k - 1):
            try:
                self._posted.append(engine.post_recv(self.sock, size))
            except OSError:
                break

    def _post_ahead(self) -> None:
        """During a burst, post the next pool once the reader has caught up."""
        if (
            self.abd.in_burst()
            and not self._posted
            and not self._ready
            and not self._eof
            and self._recv_error is None
            and not self._closing
        ):
            # best effort: the next receive() posts (and reports a failure)
            with contextlib.suppress(OSError):
                self._post_pool()

    def _collect(self) -> None:
        """Move completed receives, in order, into the read-ahead queue."""
        posted = self._posted
        while posted and posted[0].done:
            op = posted.popleft()
            if op.error:
                # cancelled: by close(); its bytes, if any, are of no use now
                if not op.cancelled and self._recv_error is None:
                    self._recv_error = op.oserror("WSARecv")
                continue
            n = op.transferred
            if n > 0:
                buf = op.keep[0]  # type: ignore[index]
                self._ready.append(ffi.buffer(buf, n)[:])
                self.abd.observe(n == self.buffersize)
            else:
                self._eof = True

    def _take(self, max_bytes: int) -> bytes:
        ready = self._ready
        if ready:
            data = ready.popleft()
            if len(data) > max_bytes:
                ready.appendleft(data[max_bytes:])
                data = data[:max_bytes]
            if not ready:
                self._post_ahead()
            return data
        if self._recv_error is not None:
            raise self._recv_error
        self._check_send_error()
        if self._eof:
            return b""
        # every posted receive was cancelled (close): nothing came
        raise OSError(None, "receive cancelled", None, ws2.ERROR_OPERATION_ABORTED)

    # -- sending --------------------------------------------------------------

    def _pending_sends(self) -> int:
        return len(self._sending)

    def _write_behind(self) -> int:
        return len(self._pipelined)

    async def send(self, data: memoryview) -> None:
        self._engine.check_open()
        self._check_send_error()
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._sending:
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            else:
                self.counters.direct_send += 1
            if sent == len(data):
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            data = data[sent:]
        if self.sendcap == 1:
            await self._send_and_wait(data)
            return
        await self._wait_sends_below(self.sendcap)
        self._check_send_error()
        self._check_not_closing()
        # The caller may reuse a mutable buffer as soon as send() returns.
        owned = data if isinstance(data.obj, bytes) else memoryview(bytes(data))
        nbytes = len(owned)
        try:
            while owned:
                self._post_send(owned[:MAX_SEND], pipelined=True)
                owned = owned[MAX_SEND:]
        except OSError as exc:
            # Bytes cannot be skipped on a stream: it is broken from now on.
            self._send_error = exc
            self._send_error_reported = True
            raise
        self._queued_send(nbytes)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def _post_send(self, data: memoryview, pipelined: bool) -> Op:
        op = self._engine.post_send(self.sock, data)
        op.on_complete = self._on_send_complete
        self._sending.append(op)
        if pipelined:
            self._pipelined.add(op)
        return op

    async def _send_and_wait(self, data: memoryview) -> None:
        await self._wait_sends_below(1)  # write-behind sends of an earlier sendcap
        self._check_send_error()
        while data:
            self._check_not_closing()
            op = self._post_send(data[:MAX_SEND], pipelined=False)
            await self._engine.wait_or_cancel(op)
            if op.error:
                raise op.oserror("WSASend")
            data = data[op.transferred :]
            if data:
                await trio.lowlevel.checkpoint_if_cancelled()

    def _on_send_complete(self, op: Op) -> None:
        with contextlib.suppress(ValueError):
            self._sending.remove(op)
        if op in self._pipelined:
            self._pipelined.discard(op)
            length = len(op.keep[0])  # type: ignore[index]
            failed = op.error or op.transferred < length
            # cancelled: by close(), which cut write-behind sends off on purpose
            if failed and not op.cancelled and self._send_error is None:
                self._send_error = (
                    op.oserror("WSASend")
                    if op.error
                    else OSError(None, "short send", None, ws2.WSAECONNRESET)
                )
            if _trace.active:
                self._trace_send_completed(-op.error if op.error else op.transferred)
        self._wake_sender()

    # -- closing --------------------------------------------------------------

    async def close(self) -> None:
        """Wait (bounded, cancellable) for write-behind sends, then cancel and
        drain every operation in flight and close the socket, even when cancelled."""
        try:
            if self._write_behind() and self._send_error is None:
                with trio.move_on_after(CLOSE_DRAIN_SECONDS):
                    while self._write_behind() and self._send_error is None:
                        await self._wait_sends_below(self._pending_sends())
        finally:
            self._closing = True
            self._wake_sender()  # a sender waiting for room learns of the close
            pending = [op for op in (*self._posted, *self._sending) if not op.done]
            if pending:
                with trio.CancelScope(shield=True):
                    await self._engine.drain(pending)
            self._posted.clear()
            self._sending.clear()
            self._pipelined.clear()
            self._engine.forget(self.sock)
            self.sock.close()
        self._raise_unreported_send_error()
