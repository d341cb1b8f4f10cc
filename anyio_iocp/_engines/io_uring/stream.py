"""One connected stream on the io_uring engine: the primitives of the shared
receive pool and send chain, and the multishot receive.

The policy is written once in the flow package: receiving ahead with
Automatic Burst Detection in :mod:`anyio_iocp._flow.receive_pool`, sending
(direct, waited for, or write-behind within ``sendcap``) and closing in
:mod:`anyio_iocp._flow.send_chain`.  What is io_uring's here:

* Receives: io_uring does not order independent receives on one socket, so
  the ``k`` receives of a pool are posted as one *linked chain*
  (``IOSQE_IO_LINK``): the kernel runs them one after the other, and their
  bytes arrive in order.  A chain is at most as long as the submission ring.
  A failed receive makes the kernel cancel the rest of its chain
  (``ECANCELED``).
* :class:`MultishotStreamIO` waits with one multishot receive into the
  engine's buffer pool (:mod:`anyio_iocp._engines.io_uring.multishot`) and
  serves bursts with the pool's chains; bytes that the multishot receive
  brought are taken on a path of their own at the top of ``receive()``.
  UNIX streams keep single receives: a receive ahead of the reader would drop
  descriptors passed with the bytes.
* A stream whose last receive filled its whole buffer (a burst, as ABD sees
  it) waits for readiness through Trio's epoll and receives directly, not
  through the multishot receive: the buffer pool would copy each byte twice
  (the kernel into the pool, then out of it into ``bytes``), and for full
  64 KiB receives that and the completion's path cost more than the poll
  (``docs/performance.md``, "A bursting stream waits for readiness").
  ``close()`` wakes such a wait (``notify_closing``) just before the socket
  closes, when no new one can begin.
* Write-behind sends are queued and posted once per scheduler pass as one
  linked chain (:meth:`UringStreamIO.post_queued_sends`), and a new chain only
  after the previous one completed, so bytes leave in order.  A failed send
  makes the kernel cancel the rest of its chain.
* A send that finds nothing of the stream pending may go *quiet*
  (:mod:`anyio_iocp._engines.io_uring.quiet_sends`): handed to the ring, and
  ``send()`` returns; nothing else of the stream is posted or sent until the
  reaper's count says it completed.
* From the moment ``close()`` starts cancelling, nothing is posted, so no
  operation can reach the descriptor number after it is closed (the kernel
  would find whatever socket reuses it).
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any, cast

from trio import lowlevel  # (faster than trio.lowlevel: see _streams/__init__.py)

from anyio_iocp._engines.io_uring._uring import ffi
from anyio_iocp._engines.io_uring.multishot import BUSY_AFTER, MultishotReceiver
from anyio_iocp._engines.io_uring.quiet_sends import QUIET_AFTER, QUIET_MAX
from anyio_iocp._flow.receive_pool import ReceivePool
from anyio_iocp._flow.send_chain import MAX_SEND, SEND_CANCELLED, SEND_NOW_FLAGS, SendChain
from anyio_iocp._flow.yield_first import looked_again, should_yield_first
from anyio_iocp._interface.cancel_points import cancel_pending
from anyio_iocp._interface.engine import (
    AF_UNIX,
    oserror,
    raw_family,
    set_nonblocking,
    unsent_bytes_error,
)
from anyio_iocp._interface.readiness import wait_readable
from anyio_iocp._interface.settings import Tuning, Usage
from anyio_iocp._interface.yielding import shielded_yield

if TYPE_CHECKING:
    from anyio_iocp._engines.io_uring.engine import SendOp, UringEngine
    from anyio_iocp._engines.io_uring.op import UringOp

_new_buffer = ffi.new_allocator(should_clear_after_alloc=False)
_RECV_CANCELLED = -errno.ECANCELED
_SEND_CANCELLED_RES = -errno.ECANCELED


def open_stream_io(engine: UringEngine, sock: socket.socket, tuning: Tuning) -> UringStreamIO:
    """The stream of ``sock``: with a multishot receive where the engine has
    one, except on UNIX streams (a receive ahead of the reader would drop
    descriptors passed with the bytes)."""
    if engine.multishot_recv and raw_family(sock) != AF_UNIX:
        return MultishotStreamIO(engine, sock, tuning)
    return UringStreamIO(engine, sock, tuning)


class UringStreamIO(ReceivePool, SendChain):
    """A stream that receives with single receives, posted as linked chains."""

    _engine: UringEngine
    #: waits with a multishot receive (:class:`MultishotStreamIO`)
    multishot = False

    def __init__(self, engine: UringEngine, sock: socket.socket, tuning: Tuning) -> None:
        set_nonblocking(sock)  # for the direct calls; io_uring ignores the flag
        self._init_flow(sock, tuning, engine.counters)
        self.fd = sock.fileno()
        self._engine = engine
        self._init_receive_pool()
        if self.multishot:
            # one multishot receive into the engine's buffer pool, where the
            # kernel has it
            self._ms = MultishotReceiver(engine)
            #: receives waiting for readiness (0 or 1: the guard allows one)
            self._readable_waits = 0
        self._init_send_chain()
        #: the stream's slot for quiet sends (0: none yet), and the count of
        #: its quiet sends posted, to compare with the reaper's (mod 2**32;
        #: written by the engine's post_quiet_send, with the length)
        self._qslot = 0
        self.qposted = 0
        self.qlength = 0  # the length of the last one (its user_data)
        #: the last pass this stream sent in more than once: a stream that
        #: streams (several sends per pass) sends directly ("auto")
        self._busy_pass = -2
        #: sends made, counted up to QUIET_AFTER ("ring" counts none)
        self._sends = QUIET_AFTER if engine.send_mode == "ring" else 0

    # -- receiving: the pool's primitives -------------------------------------

    def _post_receives(self, count: int) -> None:
        """One linked chain: io_uring does not order independent receives."""
        size = self.buffersize
        count = min(count, self._engine.max_chain)
        buffers = [_new_buffer("char[]", size) for _ in range(count)]
        self._engine.post_recv_chain(self.fd, buffers, size, self._posted)

    def _receive_outcome(self, op: UringOp) -> bytes | OSError | None:
        res = op.result
        if res >= 0:
            return ffi.buffer(op.keep, res)[:] if res else b""
        if res == _RECV_CANCELLED:
            # cancelled by close(), or by the kernel because an earlier
            # receive of the chain failed (that error is recorded)
            return None
        return oserror(res, "recv")

    def _receive_cancelled(self) -> OSError:
        return OSError(errno.ECANCELED, "receive cancelled")

    # -- sending: the chain's primitives --------------------------------------

    def _quiet_in_flight(self) -> bool:
        slot = self._qslot
        return slot != 0 and self._engine.quiet.done[slot] != self.qposted

    def _send_now(self, data: memoryview) -> int:
        """A quiet send while the engine says the ring pays (``quiet_now``,
        decided once per pass), otherwise a direct one; nothing while the
        last quiet send is in flight (bytes keep their order)."""
        engine = self._engine
        slot = self._qslot
        passes = engine.budget.passes  # (send_pass counts the same passes)
        if slot and engine.quiet.done[slot] != self.qposted:
            # The last quiet send is in flight: nothing of the stream went out
            # after it, so it is the stream's last send.  Posted in this pass,
            # it has not reached the kernel yet: hand it over now rather than
            # wait a pass (a stream that sends again in the same pass streams).
            if self.send_pass != passes:
                return 0  # it waits in the kernel: send() waits for it
            engine.submit_now()
            if engine.quiet.done[slot] != self.qposted:
                return 0
            # it may have failed: nothing goes out behind a failed send
            self._check_send_error()
        if self.send_pass != passes:  # the first send of this stream in this pass
            self.send_pass = passes  # (SendersPerPass; look_after_send)
            engine.senders.senders += 1
        else:
            self._busy_pass = passes
        if self._sends < QUIET_AFTER:
            self._sends += 1  # (a short connection sends directly: QUIET_AFTER)
        elif (
            engine.quiet_now
            and self.sendcap == 1
            and 0 < (size := len(data)) <= QUIET_MAX
            and (passes - self._busy_pass > 1 or engine.send_mode == "ring")
        ):
            slot = slot or self._take_quiet_slot()
            if slot:
                obj = data.obj
                # the caller may reuse a mutable buffer once send() returns
                keep = obj if type(obj) is bytes and len(obj) == size else bytes(data)
                engine.post_quiet_send(self, keep, slot, size)
                return size
        try:  # SendChain._send_now, inlined: this runs once per message
            sent = self.sock.send(data, SEND_NOW_FLAGS)
        except BlockingIOError:
            return 0
        self.counters.direct_send += 1
        return sent

    def _take_quiet_slot(self) -> int:
        slot = self._engine.quiet.acquire(self)
        if slot:
            self._qslot = slot
            self.qposted = int(self._engine.quiet.done[slot])
        return slot

    def on_quiet_send_complete(self, res: int, length: int) -> None:
        """The reaper copied a quiet send's completion out: it failed, or a
        task waits (watched).  Errors are the write-behind ones."""
        if res != length:
            if res == _SEND_CANCELLED_RES:
                failure: OSError = SEND_CANCELLED
            elif res < 0:
                failure = oserror(res, "send")
            else:
                failure = OSError(errno.EPIPE, "short send")
            if self._send_error is None and failure is not SEND_CANCELLED:
                self._send_error = failure
            if self._send_error is not None:
                self._queued.clear()
        elif not self._sending and self._queued:
            self._post_queued_later()
        self._wake_sender()

    def _before_send_wait(self) -> None:
        if self._quiet_in_flight():
            self._engine.quiet.watch[self._qslot] = 1  # its completion wakes us

    def _pending_sends(self) -> int:
        return len(self._queued) + len(self._sending) + self._quiet_in_flight()

    def _post_send(self, data: memoryview) -> SendOp:
        (op,) = self._engine.post_send_chain(
            self.fd, [data], self, pipelined=False, sending=self._sending
        )
        return op

    def _sent(self, op: SendOp) -> int:
        if op.result < 0:
            raise oserror(op.result, "send")
        return op.result

    def _hand_over(self, data: bytes | memoryview) -> None:
        self._queued.append(data)
        self._engine.post_later(self)

    def _post_queued_later(self) -> None:
        self._engine.post_later(self)

    def _was_write_behind(self, op: SendOp) -> bool:
        return op.pipelined

    def _send_failure(self, op: SendOp) -> OSError | None:
        res = op.result
        if res >= len(cast(Any, op.keep)):
            return None
        if res == -errno.ECANCELED:
            # the kernel cancels the rest of a chain after a failed send
            return SEND_CANCELLED
        return oserror(res, "send") if res < 0 else OSError(errno.EPIPE, "short send")

    def _send_result(self, op: SendOp) -> int:
        return op.result

    def _write_behind_pending(self) -> int:
        pipelined: int = sum(op.pipelined for op in self._sending)
        return len(self._queued) + pipelined + self._quiet_in_flight()

    def post_queued_sends(self) -> None:
        """Called once per scheduler pass: post queued sends as one linked chain."""
        if self._sending or not self._queued or self._send_error is not None or self._closing:
            return
        if self._quiet_in_flight():
            # behind the quiet send: its completion posts them (on_quiet_send_complete)
            self._engine.quiet.watch[self._qslot] = 1
            return
        try:
            chunks, taken, split = self._next_chain()
            # (made before the chain is posted: after it, the queue only shrinks)
            rest = memoryview(self._queued[0])[split:] if split else None
            self._engine.post_send_chain(
                self.fd, chunks, self, pipelined=True, sending=self._sending
            )
        except (OSError, MemoryError) as exc:
            # Nothing of the chain reached the kernel.  Bytes cannot be skipped
            # on a stream: the stream is broken, and the next operation says
            # so (no memory: ENOMEM, the cause attached).  Nobody else would
            # post them again: the stream is listed only while sends are queued.
            self._send_error = exc if isinstance(exc, OSError) else unsent_bytes_error(exc)
            self._queued.clear()
            self._wake_sender()
            return
        del self._queued[:taken]
        if rest is not None:
            self._queued[0] = rest

    def _next_chain(self) -> tuple[list[memoryview], int, int]:
        """The next chain of queued sends: its pieces, how many queued sends
        it takes whole, and where it cuts the next one (0: nowhere)."""
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
        return chunks, taken, split

    # -- closing --------------------------------------------------------------

    def _operations(self) -> list[Any]:
        return [*self._posted, *self._sending, *self.quiet_ops()]

    def quiet_ops(self) -> list[Any]:
        """The quiet send in flight, as an operation to cancel and wait for."""
        if not self._quiet_in_flight():
            return []
        return [self._engine.quiet_op(self._qslot, self.qlength)]

    def _release(self) -> None:
        self._posted.clear()
        self._sending.clear()
        if self._qslot and not self._quiet_in_flight():
            self._engine.quiet.release(self._qslot)
            self._qslot = 0


class MultishotStreamIO(UringStreamIO):
    """A stream that waits with its multishot receive (:mod:`.multishot`) and
    serves bursts with the pool's chains of single receives."""

    #: (no class attribute of this name anywhere: it would keep CPython from
    #: specializing the instance attribute's every read)
    _ms: MultishotReceiver
    multishot = True

    def usage(self, name: str) -> Usage:
        usage = super().usage(name)
        ms = self._ms
        if name == "recvburst":
            return Usage(usage.cap, usage.in_use + len(ms.ready) + (ms.armed is not None))
        if name == "buffersize":
            return Usage(usage.cap, usage.in_use + ms.ready_bytes)
        return usage

    def has_read_ahead(self) -> bool:
        ms = self._ms
        return bool(self._ready or self._posted or ms.ready or ms.armed)

    def _may_post_ahead(self) -> bool:
        ms = self._ms
        # (not after an error: receives posted then would hand out the bytes
        # after the ones it lost)
        return ms.error is None and ms.idle()

    def _operations(self) -> list[Any]:
        return [*self._posted, *self._sending, *self.quiet_ops(), *self._ms.pending()]

    async def receive(self, max_bytes: int) -> bytes:
        ms = self._ms
        if not (self._ready or self._posted or self._eof or self._recv_error):
            if ms.ready and self._send_error is None and not self._engine.closed:
                # The usual case on a busy stream, with nothing to check: bytes
                # that the multishot receive brought are waiting.
                if cancel_pending():
                    await lowlevel.checkpoint_if_cancelled()
                data = ms.take(max_bytes, self.buffersize)
                if self.abd.bursting and not ms.ready:
                    self._post_ahead()  # during a burst, once the reader has caught up
                return data  # no wait: the stream layer's budget decides on a yield
            engine = self._engine
            if engine.closed:
                engine.check_open()  # a stream kept past its run: a clear error
            if self._send_error is not None:  # a write-behind send failed
                await self._raise_unreported_send_error_after_cancel_check()
            # the cancel point of every path below, before any byte is taken
            if cancel_pending():
                await lowlevel.checkpoint_if_cancelled()
            if ms.receives < BUSY_AFTER:
                ms.receives += 1
            if ms.armed is None and not (ms.ready or ms.eof or ms.error is not None):
                # Nothing armed and nothing held (not ms.has_data(), inlined):
                # bytes may be there already, taken without waiting a pass.
                # (Here, not in a coroutine of its own: a lone busy stream
                # takes this path for every message.)
                self._check_not_closing()
                now = self._first_look(max_bytes)
                if now is not None:
                    ms.direct_hits += 1  # (how the next wait arms: MultishotReceiver.arm)
                    return now
                # Nothing is armed, so nothing of this stream's is in the ring
                # (only an operation's final completion disarms it): no reap.
                if (
                    ms.receives >= BUSY_AFTER
                    and not (ms.starved or self.abd.bursting)
                    and engine.load.batched(engine.counters)
                ):
                    # A busy stream among many whose first look found
                    # nothing, or did not look (look_after_send), with
                    # nothing armed (its last receive reached its cap): it
                    # waits with its multishot receive again, armed before
                    # the yield, so that the look after the yield needs no
                    # recv of its own, nor do the messages after it
                    # (multishot.py, "A lone busy stream takes the direct
                    # path").
                    ms.arm(self)
            else:
                # (ms.has_data() spelled out: this runs once per message)
                if ms.ready or ms.eof or ms.error is not None:
                    return self._take_multishot(ms, max_bytes)  # no wait
                engine.reap_ready()  # armed: the kernel may have finished meanwhile
                if ms.ready or ms.eof or ms.error is not None:
                    return self._take_multishot(ms, max_bytes)
            # The look after one yield, here rather than in a coroutine of its
            # own: on a busy server most receives that find nothing end here.
            if not engine.budget.strict and should_yield_first(self):
                # the peer may answer during one scheduler pass (yield_first)
                await shielded_yield()
                found = bool(ms.ready) or ms.eof or ms.error is not None
                if ms.armed is None and not found:
                    self._check_not_closing()
                    now = self._recv_now(max_bytes)
                    looked_again(self, now is not None)
                    if now is not None:
                        ms.direct_hits += 1
                        return now
                else:
                    looked_again(self, found)
                    if ms.ready:
                        # (_take_multishot's usual case, spelled out: on a busy
                        # server this is how most messages are taken)
                        data = ms.take(max_bytes, self.buffersize)
                        if self.abd.bursting:
                            self._post_ahead()  # during a burst, once the reader has caught up
                        return data
                    if found:
                        return self._take_multishot(ms, max_bytes)
            return await self._wait_multishot(ms, max_bytes)
        # a burst: the pool's receives are posted or hold bytes
        return await ReceivePool.receive(self, max_bytes)

    async def _wait_multishot(self, ms: MultishotReceiver, max_bytes: int) -> bytes:
        """Wait for bytes, end of stream or an error that the multishot
        receive brings (after :meth:`receive` found none, and after its cancel
        check, so that no path here returns without one)."""
        while not ms.has_data():
            if ms.armed is None and self.abd.bursting:
                # full receives: a readiness wait and a direct recv (above)
                now = await self._receive_when_readable(max_bytes)
                if now is not None:
                    return now
                continue  # not readable after all, or the burst is over
            if ms.armed is None:
                self._check_not_closing()
                if ms.starved:
                    # the pool ran dry: this time, a receive with its own buffer
                    return await self._receive_posted(max_bytes)
                ms.arm(self)
            await ms.wait()  # cancellable: the receive stays armed
        return self._take_multishot(ms, max_bytes)

    async def _receive_when_readable(self, max_bytes: int) -> bytes | None:
        """Wait until the socket is readable (cancellable: nothing is taken
        before the wait ends), then a direct recv; None if it found nothing."""
        self._check_not_closing()
        self._readable_waits += 1
        try:
            await wait_readable(self.sock)
        finally:
            self._readable_waits -= 1
        self._check_not_closing()
        return self._recv_now(max_bytes)

    def _before_socket_close(self) -> None:
        if self._readable_waits:
            # a receive waits in Trio's epoll (it may have begun while close()
            # drained write-behind sends): it must be woken, and the
            # descriptor forgotten there, before the socket closes
            lowlevel.notify_closing(self.sock)

    def _take_multishot(self, ms: MultishotReceiver, max_bytes: int) -> bytes:
        if ms.ready:
            data = ms.take(max_bytes, self.buffersize)
            if self.abd.bursting:  # (checked here first: this runs once per message)
                self._post_ahead()  # during a burst, once the reader has caught up
            return data
        if ms.error is not None:
            raise ms.error.with_traceback(None)  # (raised again each call: no growing traceback)
        self._check_send_error()
        return b""  # end of stream
