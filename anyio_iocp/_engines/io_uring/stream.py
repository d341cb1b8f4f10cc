"""One connected stream on the io_uring engine: sendcap and Automatic Burst
Detection (recvburst).

Receiving
---------
``receive()`` first takes bytes already received ahead, then bytes the socket
already holds (a direct non-blocking ``recv``), and only when there are none it
posts receives and waits.  Automatic Burst Detection decides how many: ``k``
receives, posted as one *linked chain* (``IOSQE_IO_LINK``), so that the kernel
runs them one after the other and their bytes arrive in order; io_uring does
not order independent receives on one socket.  ``k`` starts at 1, grows by one
for every receive that completes full (the sender outruns the reader) and
shrinks by one for every receive that completes partly filled, within
``1..recvburst``.  While a burst lasts (the last receive came back full and
``k > 1``), the next chain is posted as soon as the reader has taken what the
previous one brought, ahead of the next ``receive()``.  Bytes held ahead of the
reader are therefore bounded by ``k * buffersize``.  A new chain is only
posted once the previous one has completed entirely: chains are not ordered
relative to each other.

A cancelled ``receive()`` leaves its receives posted; their bytes go to the
next ``receive()``.

Sending
-------
With ``sendcap == 1`` a send goes straight to the socket without blocking;
what does not fit is posted and ``send()`` waits for its completion (cancelling
it in the kernel if the task is cancelled).

With ``sendcap > 1``, ``send()`` returns as soon as its data is handed over
while fewer than ``sendcap`` sends are pending, and otherwise first waits for
the oldest to complete.  The data is copied unless it is an immutable
``bytes`` object, so the caller may reuse a mutable buffer at once.  Pending
sends are posted once per scheduler pass as one linked chain, and a new chain
only after the previous one completed, so bytes leave in order.  An error of a
send that completes after ``send()`` returned is raised by the next operation
on the stream; ``close()`` first waits (bounded, cancellable) for pending
sends to go out.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import TYPE_CHECKING, Any, cast

import trio

from anyio_iocp._engines.io_uring._uring import ffi
from anyio_iocp._engines.io_uring.multishot import BUSY_AFTER, MultishotReceiver
from anyio_iocp._flow.send_chain import WriteBehind
from anyio_iocp._flow.stream_base import FlowStream
from anyio_iocp._interface import trace as _trace
from anyio_iocp._interface.engine import AF_UNIX, oserror, raw_family
from anyio_iocp._interface.settings import Tuning, Usage

if TYPE_CHECKING:
    from anyio_iocp._engines.io_uring.engine import SendOp, UringEngine
    from anyio_iocp._engines.io_uring.op import Op

#: how long close() waits for pending write-behind sends before cutting them off
CLOSE_DRAIN_SECONDS = 10.0
MAX_SEND = 1 << 30
SEND_NOW_FLAGS = socket.MSG_NOSIGNAL

_new_buffer = ffi.new_allocator(should_clear_after_alloc=False)


class UringStreamIO(WriteBehind, FlowStream):
    def __init__(self, engine: UringEngine, sock: socket.socket, tuning: Tuning) -> None:
        sock.setblocking(False)  # for the direct calls; io_uring ignores the flag
        self._init_flow(sock, tuning, engine.counters)
        self.fd = sock.fileno()
        self._engine = engine
        # receive side
        # lists, not deques: they hold a few items, and an empty deque costs
        # 760 bytes, which 10,000 idle connections would feel
        self._posted: list[Op] = []  # one linked chain of receives, in order
        self._ready: list[bytes] = []  # bytes received ahead of the reader
        self._eof = False
        self._recv_error: OSError | None = None
        # one multishot receive into the engine's buffer pool, where the kernel
        # has it; UNIX streams keep single receives: a receive ahead of the
        # reader would drop descriptors passed with the bytes
        self._ms = (
            MultishotReceiver(engine)
            if engine.multishot_recv and raw_family(sock) != AF_UNIX
            else None
        )
        # send side
        self._queued: list[bytes | memoryview] = []  # accepted, not yet posted
        self._sending: list[SendOp] = []  # one linked chain of sends, oldest first
        self._init_write_behind()
        # _closing (WriteBehind) is set by close() before it cancels: from then
        # on nothing is posted, so no operation can reach the descriptor number
        # after it is closed (the kernel would find whatever socket reuses it)

    # -- settings -------------------------------------------------------------

    def usage(self, name: str) -> Usage:
        if name == "sendcap":
            return Usage(self.sendcap, len(self._queued) + len(self._sending))
        ms = self._ms
        if name == "recvburst":
            # receives in use: posted, or completed with bytes not yet taken
            used = len(self._posted) + len(self._ready)
            if ms is not None:
                used += len(ms.ready) + (ms.armed is not None)
            return Usage(self.recvburst, used)
        if name == "buffersize":
            held = sum(map(len, self._ready)) + (ms.ready_bytes if ms is not None else 0)
            return Usage(self.buffersize, held)
        raise ValueError(f"unknown stream setting {name!r}")

    # -- receiving ------------------------------------------------------------

    async def receive(self, max_bytes: int) -> bytes:
        ms = self._ms
        if (
            ms is not None
            and ms.ready
            and not (self._ready or self._posted or self._eof or self._recv_error)
            and self._send_error is None
            and not self._engine.closed
        ):
            # The usual case on a busy stream, with nothing to check: bytes
            # that the multishot receive brought are waiting.
            self._engine.load.receives += 1
            await trio.lowlevel.checkpoint_if_cancelled()
            data = ms.take(max_bytes)
            if self.abd.bursting and not ms.ready:
                self._post_ahead()  # during a burst, once the reader has caught up
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        self._engine.check_open()  # a stream kept past its run: a clear error
        self._raise_unreported_send_error()  # a write-behind send failed
        if self._ms is not None and not (
            self._ready or self._posted or self._eof or self._recv_error
        ):
            return await self._receive_multishot(self._ms, max_bytes)
        posted = self._posted
        if not self._ready and posted and not posted[0].done:
            await self._engine.wait(posted[0])
            self._collect()
            return self._take(max_bytes)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._collect()
        if not (self._ready or posted or self._eof or self._recv_error):
            now = self._recv_now(max_bytes)
            if now is None:
                return await self._receive_single(max_bytes)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return now
        data = self._take(max_bytes)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    def _recv_now(self, max_bytes: int) -> bytes | None:
        """A direct non-blocking recv: the bytes (``b""`` at end of stream),
        or None when the socket holds none yet."""
        try:
            data = self.sock.recv(min(max_bytes, self.buffersize))
        except BlockingIOError:
            self._check_send_error()
            return None
        self.counters.direct_recv += 1
        if data:
            self.abd.observe(len(data) == self.buffersize)
            self._post_ahead()  # a burst: k receives ahead, as a linked chain
        else:
            self._eof = True
            self._check_send_error()  # a reset that a send reported first
        return data

    async def _receive_single(self, max_bytes: int) -> bytes:
        """Post receives with buffers of their own and wait for the first."""
        self._post_chain()
        await self._engine.wait(self._posted[0])
        self._collect()
        return self._take(max_bytes)

    def has_read_ahead(self) -> bool:
        ms = self._ms
        return bool(self._ready or self._posted or (ms is not None and (ms.ready or ms.armed)))

    async def _receive_multishot(self, ms: MultishotReceiver, max_bytes: int) -> bytes:
        self._engine.load.receives += 1
        if ms.receives < BUSY_AFTER:
            ms.receives += 1
        if not ms.has_data():
            if ms.armed is None:
                # Bytes may be there already: take them without waiting a pass.
                await trio.lowlevel.checkpoint_if_cancelled()
                self._check_not_closing()
                now = self._recv_now(max_bytes)
                if now is not None:
                    ms.direct_hits += 1  # (how the next wait arms: MultishotReceiver.arm)
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return now
            self._engine.reap_ready()  # the kernel may have finished meanwhile
        if ms.has_data():
            # no wait: a checkpoint like every other receive that did not block
            await trio.lowlevel.checkpoint_if_cancelled()
            data = self._take_multishot(ms, max_bytes)
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        while not ms.has_data():
            if ms.armed is None:
                self._check_not_closing()
                if ms.starved:
                    # the pool ran dry: this time, a receive with its own buffer
                    return await self._receive_single(max_bytes)
                ms.arm(self)
            await ms.wait()  # cancellable: the receive stays armed
        return self._take_multishot(ms, max_bytes)

    def _take_multishot(self, ms: MultishotReceiver, max_bytes: int) -> bytes:
        if ms.ready:
            data = ms.take(max_bytes)
            self._post_ahead()  # during a burst, once the reader has caught up
            return data
        if ms.error is not None:
            raise ms.error
        self._check_send_error()
        return b""  # end of stream

    def _post_chain(self) -> None:
        self._check_not_closing()
        size = self.buffersize
        count = min(self.abd.k, self._engine.max_chain)
        buffers = [_new_buffer("char[]", size) for _ in range(count)]
        self._posted.extend(self._engine.post_recv_chain(self.fd, buffers, size))

    def _post_ahead(self) -> None:
        """During a burst, post the next chain once the reader has caught up."""
        if (
            self.abd.in_burst()
            and not self._posted
            and not self._ready
            and not self._eof
            and self._recv_error is None
            and not self._closing
            and (self._ms is None or self._ms.idle())
        ):
            # best effort: bytes already taken must reach the caller; the next
            # receive() posts (and reports a failure) if it needs to
            with contextlib.suppress(OSError):
                self._post_chain()

    def _collect(self) -> None:
        """Move completed receives, in order, into the read-ahead queue."""
        posted = self._posted
        while posted and posted[0].done:
            op = posted.pop(0)
            res = op.result
            if res > 0:
                self._ready.append(ffi.buffer(op.keep, res)[:])
                self.abd.observe(res == self.buffersize)
            elif res == 0:
                self._eof = True
            elif res != -errno.ECANCELED and self._recv_error is None:
                # ECANCELED: cancelled by close(), or by the kernel because an
                # earlier receive of the chain failed (that error is recorded)
                self._recv_error = oserror(res, "recv")

    def _take(self, max_bytes: int) -> bytes:
        ready = self._ready
        if ready:
            data = ready[0]
            if len(data) > max_bytes:
                ready[0] = data[max_bytes:]
                data = data[:max_bytes]
            else:
                del ready[0]
            if not ready:
                self._post_ahead()
            return data
        if self._recv_error is not None:
            raise self._recv_error
        self._check_send_error()
        if self._eof:
            return b""
        # every posted receive was cancelled (close): nothing came
        raise OSError(errno.ECANCELED, "receive cancelled")

    # -- sending --------------------------------------------------------------

    def _pending_sends(self) -> int:
        return len(self._queued) + len(self._sending)

    def _write_behind(self) -> int:
        return len(self._queued) + sum(op.pipelined for op in self._sending)

    async def send(self, data: memoryview) -> None:
        if self._engine.closed:
            self._engine.check_open()
        if self._send_error is not None:
            self._check_send_error()
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._queued and not self._sending:
            try:
                sent = self.sock.send(data, SEND_NOW_FLAGS)
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
        owned = data if isinstance(data.obj, bytes) else bytes(data)
        self._queued.append(owned)
        self._queued_send(len(owned))
        self._engine.flush_later(self)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def _send_and_wait(self, data: memoryview) -> None:
        await self._wait_sends_below(1)  # write-behind sends of an earlier sendcap
        self._check_send_error()
        engine = self._engine
        while True:
            self._check_not_closing()
            (op,) = engine.post_send_chain(self.fd, [data[:MAX_SEND]], self, pipelined=False)
            self._sending.append(op)
            await engine.wait_or_cancel(op)
            if op.result < 0:
                raise oserror(op.result, "send")
            data = data[op.result :]
            if not data:
                return
            await trio.lowlevel.checkpoint_if_cancelled()

    def flush_sends(self) -> None:
        """Called once per scheduler pass: post queued sends as one linked chain."""
        if self._sending or not self._queued or self._send_error is not None or self._closing:
            return
        # a chain must fit in the submission ring: the rest waits for the next one
        limit = self._engine.max_chain
        chunks: list[memoryview] = []
        taken = split = 0
        for queued in self._queued:
            item = memoryview(queued)
            pieces = [item[i : i + MAX_SEND] for i in range(0, len(item), MAX_SEND)] or [item]
            room = limit - len(chunks)
            if len(pieces) > room:
                if not chunks:  # one send longer than a whole chain: its head goes now
                    chunks = pieces[:room]
                    split = room * MAX_SEND
                break
            chunks.extend(pieces)
            taken += 1
        try:
            ops = self._engine.post_send_chain(self.fd, chunks, self, pipelined=True)
        except OSError as exc:
            # Nothing of the chain reached the kernel.  Bytes cannot be skipped
            # on a stream: the stream is broken, and the next operation says so.
            self._send_error = exc
            self._queued.clear()
            self._wake_sender()
            return
        del self._queued[:taken]
        if split:
            self._queued[0] = memoryview(self._queued[0])[split:]
        self._sending.extend(ops)

    def on_send_complete(self, op: SendOp) -> None:
        """A send completed (completions of a chain come in order)."""
        if op in self._sending:
            self._sending.remove(op)
        res = op.result
        if op.pipelined and (res < 0 or res < len(cast(Any, op.keep))):
            # Nobody waits for this send: remember its error for the next
            # operation.  The kernel cancels the rest of the chain (ECANCELED).
            if self._send_error is None and res != -errno.ECANCELED:
                self._send_error = (
                    oserror(res, "send") if res < 0 else OSError(errno.EPIPE, "short send")
                )
            if self._send_error is not None:
                self._queued.clear()
        elif not self._sending and self._queued:
            self._engine.flush_later(self)
        if _trace.active and op.pipelined:
            self._trace_send_completed(res)
        self._wake_sender()

    # -- closing --------------------------------------------------------------

    async def close(self) -> None:
        """Wait (bounded, cancellable) for pending sends, then cancel and drain
        every operation in flight and close the socket, even when cancelled."""
        try:
            # Write-behind sends belong to nobody but the stream: let them go
            # out.  A send that a task is waiting for is cancelled right away
            # (that task gets ClosedResourceError).
            if self._write_behind() and self._send_error is None:
                with trio.move_on_after(CLOSE_DRAIN_SECONDS):
                    while self._write_behind() and self._send_error is None:
                        await self._wait_sends_below(self._pending_sends())
        finally:
            self._closing = True
            self._wake_sender()  # a sender waiting for room learns of the close
            self._queued.clear()
            pending: list[Any] = [op for op in (*self._posted, *self._sending) if not op.done]
            if self._ms is not None:
                pending += self._ms.pending()
            if pending:
                with trio.CancelScope(shield=True):
                    await self._engine.drain(pending)
            self._posted.clear()
            self._sending.clear()
            self.sock.close()
        self._raise_unreported_send_error()
