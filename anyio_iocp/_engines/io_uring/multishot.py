"""Receiving with one multishot receive per stream and a shared buffer pool.

The model
---------
A stream that has to wait for bytes arms *one* multishot receive
(``IORING_RECV_MULTISHOT``) with ``IOSQE_BUFFER_SELECT``.  It stays armed across
``receive()`` calls: every time bytes arrive the kernel picks a buffer from the
engine's pool (a provided buffer ring of the stream's ``buffersize``), fills it
and posts a completion naming it, while the operation stays armed
(``IORING_CQE_F_MORE``).  The reaper copies the bytes out at once and gives
the buffers of each batch of completions back to the pool together, so a pool
of a few hundred buffers serves any number of connections: buffers are only in
use between the kernel filling them and the end of the reap that took them.

What this buys, measured against posting one receive per ``receive()``: no
``recv`` attempt that fails with EAGAIN before each wait, no submission entry
and no buffer allocation per message, and no memory at all held by a
connection that waits (a waiting receive used to hold a whole buffer).

The traps
---------
* Order: completions of one operation arrive in order, and there is only one
  operation per stream, so bytes stay in order.
* Bursts (receives that come back full) are served as before multishot
  receives existed: ``k`` single receives posted ahead as one linked chain
  (see :mod:`anyio_iocp._engines.io_uring.stream`), which bounds read-ahead exactly.  The
  multishot receive is armed only when the reader waits with nothing there.
* Read-ahead of a multishot receive is bounded, by the kernel: the operation is armed with a cap of
  ``k * buffersize`` bytes in total (``k`` from Automatic Burst Detection,
  within ``1..recvburst``), and ends by itself once that much has arrived (the
  cap is Linux 6.17's; detection checks that the kernel honours it, and streams
  post single receives otherwise).  It is armed again only when the reader has
  taken everything and has to wait.  A completion may cross the cap by less
  than one buffer, so at most ``(k + 1) * buffersize - 1`` bytes wait for the
  reader.  Cancelling to stop the operation would not do: between two scheduler
  passes the kernel can fill every buffer of the pool for one stream.
* Cancellation of the reader never cancels the operation: bytes that arrive
  later wait in the read-ahead queue for the next ``receive()``.
* The operation ends by itself at end of stream (``res == 0``), on an error,
  and with ENOBUFS when the pool is empty (the reaper fell far behind).  After
  ENOBUFS the next wait uses a single receive into a buffer of its own.
* The pool's memory is lent to the kernel for as long as any operation may pick
  from it: the engine unregisters and frees it only after its ring drained.
* A copy out of a buffer that fails (no memory) must not leave a gap: the
  buffer still goes back with its batch, the stream breaks there (its reader
  gets the bytes before it, then the error), nothing after it is queued or
  read ahead, and the receive is cancelled.

Short connections wait with a single receive
--------------------------------------------
Arming a multishot receive costs the kernel more than a single receive, and a
connection that waits once or twice (a request, then the peer's close) never
gets that back.  So a stream's first ``BUSY_AFTER`` receives wait, when they
must, with a *single* receive that also picks its buffer from the pool
(``IOSQE_BUFFER_SELECT``, one completion): a waiting connection still holds no
buffer.  From then on the stream counts as busy and waits with the multishot
receive.  Both kinds go through the same operation class and the same state:
at most one is armed per stream, and a single one simply ends with its first
completion.

A lone busy stream takes the direct path
----------------------------------------
A multishot receive pays off when completions are reaped in batches: one
check of the ring serves many streams, and no stream makes a ``recv`` call.
When a scheduler pass serves about one receive (a single busy connection
exchanging small messages), each completion is reaped alone, and the kernel's
work for it (the socket's wake-up of the armed receive, the copy into a pool
buffer, the completion, the ring's wake-up) costs more than a ``recv`` that
finds the bytes there: measured with ``bench/run.py`` on echo over one
connection, the multishot receive was 1.11x Trio's round trip where single
receives were 1.02x to 1.04x.  So when an armed operation has ended (it
reached its cap), the stream first tries a direct ``recv``, and keeps doing
so while the bytes are there.  When one finds none, the stream has to wait,
and it arms a *single* receive instead of a multishot one if its last
``DIRECT_HITS`` direct receives all found bytes and the engine's recent reaps
found fewer than ``BATCHED_COMPLETIONS`` completions per reap on average
(:class:`PassLoad`).
A stream whose direct receives keep missing (a peer on another CPU), or an
engine whose reaps serve many completions at once, keeps the multishot receive.
Among many streams (reaps batched), a busy stream whose first look finds
nothing arms its multishot receive at once, before the yield that gives its
peer time to answer: otherwise a second ``recv`` after the yield often found
the bytes, the stream never waited and never armed again, and it paid two
``recv`` calls per message, one of them finding nothing (on separate CPUs,
0.03-0.08 of echo 64's messages; ``docs/performance.md``, twenty-fifth pass).

Completions per reap, not receives per scheduler pass, say whether reaping is
shared: with schedule points on a budget, a stream whose bytes are always
there makes many receives in one pass, and each of its multishot completions
was still reaped alone, by the receive that wanted it (``reap_ready``).  Judged
by receives per pass, echo over one connection with the peer on the same CPU
counted as batched and kept its multishot receive: 0.24-0.26 direct
``recv`` per message and 4.2-4.5 us of user CPU per message, against 0.98
and 2.8-3.0 us judged by completions per reap (``bench/syscall_mix.sh``
with the load generator moved to the server's CPU, two runs each; the
readiness engine: 1.01 and 3.5 us).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from trio.lowlevel import enable_ki_protection

from anyio_iocp._engines.io_uring._uring import ffi, lib
from anyio_iocp._engines.io_uring.op import UringOp
from anyio_iocp._flow.read_ahead import take_ready
from anyio_iocp._interface.engine import lost_bytes_error, oserror
from anyio_iocp._interface.parking import Spot, wake_task

if TYPE_CHECKING:
    from anyio_iocp._engines.io_uring.engine import UringEngine
    from anyio_iocp._interface.stats import EngineCounters

#: receives a stream makes before it waits with a multishot receive
BUSY_AFTER = 4
#: direct receives in a row that must find bytes before a lone stream waits
#: with a single receive rather than a multishot one
DIRECT_HITS = 8
#: completions per reap from which reaping counts as batched
BATCHED_COMPLETIONS = 2
#: reaps over which completions per reap are averaged
LOAD_WINDOW = 64
F_MORE = lib.IORING_CQE_F_MORE
# called for every received message, looked up once (see engine._cq_ready)
_unpack = ffi.unpack
F_BUFFER = lib.IORING_CQE_F_BUFFER
BUFFER_SHIFT = lib.IORING_CQE_BUFFER_SHIFT


class BufferPool:
    """A provided buffer ring: ``entries`` buffers of ``size`` bytes, group ``bgid``.

    A completion's bytes are copied out of their buffer at once
    (:meth:`MultishotOp.complete`), and the buffer's id is put in ``taken``;
    the engine gives a batch's buffers back together, once the batch's bytes
    are copied (:meth:`give_back`): one call per batch where there was one per
    completion.  Until then the kernel cannot pick them: a receive that finds
    the pool dry meanwhile ends with ``ENOBUFS`` and its stream falls back, as
    when the pool runs dry at any other time."""

    def __init__(self, ring: Any, bgid: int, entries: int, size: int) -> None:
        pool_pp = ffi.new("iou_pbuf **")
        rc = lib.iou_pbuf_open(ring, pool_pp, bgid, entries, size)
        if rc < 0:
            raise oserror(rc, "IORING_REGISTER_PBUF_RING")
        self.pool = pool_pp[0]
        self.bgid = bgid
        self.size = size
        #: where each buffer's bytes are, by buffer id (pointers into the
        #: pool's memory, which lives until close(): found once, not per copy)
        self.buffers: list[Any] = [lib.iou_pbuf_data(self.pool, bid) for bid in range(entries)]
        #: ids of the buffers whose bytes were copied out, not yet given back
        self.taken: list[int] = []

    def give_back(self) -> None:
        """Give the buffers in ``taken`` back to the kernel (one call)."""
        # the list is emptied first: an interruption (KeyboardInterrupt in a
        # task that reaps) may then lose buffers, but never give one back twice
        taken, self.taken = self.taken, []
        lib.iou_pbuf_recycle_many(self.pool, taken, len(taken))

    def close(self, ring: Any) -> None:
        """Unregister (``ring`` open) or just unmap (``ring`` is NULL)."""
        if self.pool != ffi.NULL:
            lib.iou_pbuf_close(ring, self.pool)
            self.pool = ffi.NULL
            # (a guard: the pointers point into memory that is gone, and the
            # engine closes its pools only once nothing can complete)
            self.buffers = []
            self.taken.clear()


class PassLoad:
    """The engine's scheduler passes, and whether its reaps come in batches:
    completions per reap over the last ``LOAD_WINDOW`` reaps or more.

    The engine counts passes here, and completions and reaps in its counters;
    :meth:`batched` answers from the last complete window (batched until the
    first one is complete)."""

    __slots__ = ("_batched", "_completions_then", "_reaps_then", "passes")

    def __init__(self) -> None:
        self.passes = 0
        self._reaps_then = 0
        self._completions_then = 0
        self._batched = True

    def batched(self, counters: EngineCounters) -> bool:
        """From ``counters.completions`` and ``counters.reaps`` (the engine's)."""
        reaps = counters.reaps - self._reaps_then
        if reaps >= LOAD_WINDOW:
            completions = counters.completions - self._completions_then
            self._batched = completions >= BATCHED_COMPLETIONS * reaps
            self._reaps_then, self._completions_then = counters.reaps, counters.completions
        return self._batched


class MultishotOp(UringOp):
    """The armed receive of one stream: many completions, the last one final."""

    __slots__ = ("pool", "receiver", "stream")

    def __init__(
        self, user_data: int, receiver: MultishotReceiver, pool: BufferPool, stream: Any
    ) -> None:
        super().__init__(user_data, None)
        self.receiver = receiver
        self.pool = pool  # the buffers it picks from (buffersize may change meanwhile)
        # the stream, for Automatic Burst Detection: held by the operation,
        # not by the receiver, so that the stream and its receiver form no
        # reference cycle once nothing is armed (a closed stream is then
        # freed at once, not by the cycle collector)
        self.stream = stream

    def complete(self, res: int, flags: int) -> None:
        """One completion (the reaper calls this once per message: kept flat)."""
        final = not flags & F_MORE
        if final:
            self.result = res
            self.done = True
        receiver = self.receiver
        if res > 0:
            pool = self.pool
            bid = flags >> BUFFER_SHIFT
            # the buffer goes back with its batch's (BufferPool.give_back,
            # called by the reaper), also if the copy below fails
            pool.taken.append(bid)
            if receiver.error is None:
                try:  # the bytes copied out and queued
                    receiver.ready.append(_unpack(pool.buffers[bid], res))
                except Exception as exc:  # (MemoryError): the bytes are lost
                    self._lose_bytes(receiver, exc)
                else:
                    receiver.ready_bytes += res
                    self.stream.abd.observe(res == pool.size)
            # (after an error nothing more is taken: the reader gets the bytes
            # before it, then the error, and never bytes with a gap before them)
        elif res == 0:
            receiver.eof = True
        elif res == -errno.ENOBUFS:
            receiver.starved = True
            receiver.starvations += 1
        elif res != -errno.ECANCELED and receiver.error is None:
            receiver.error = oserror(res, "recv")
        if final and receiver.armed is self:
            receiver.armed = None
        waiter = receiver.task  # the reader, if it waits (Parked.wake, inlined)
        if waiter is not None:
            receiver.task = None
            wake_task(waiter)
        if final:
            self.wake()  # tasks draining it (close); no task waits on the op itself

    def _lose_bytes(self, receiver: MultishotReceiver, exc: Exception) -> None:
        """Bytes that arrived could not be copied out of their buffer: the
        stream is broken from there on (its reader gets the bytes before them,
        then this error), and the receive is cancelled."""
        receiver.error = lost_bytes_error(exc)
        receiver._engine.request_cancel(self)


class MultishotReceiver(Spot):
    """The receive side of one stream on a multishot receive.

    The stream keeps its ABD detector (``abd``) and ``buffersize``
    and hands itself to :meth:`arm`; everything else is here.  The reader
    parks on it (``task``, :class:`~anyio_iocp._interface.parking.Spot`):
    :meth:`wait` waits, cancellable, for bytes, end of stream, an error, or the
    end of the armed operation; the operation stays armed when cancelled.
    """

    # one per connection: slots keep 10,000 idle connections small
    __slots__ = (
        "_engine",
        "armed",
        "direct_hits",
        "eof",
        "error",
        "ready",
        "ready_bytes",
        "receives",
        "starvations",
        "starved",
    )

    def __init__(self, engine: UringEngine) -> None:
        self._engine = engine
        self.ready: list[bytes] = []  # usually 0 or 1 chunks; a deque costs 760 bytes
        self.ready_bytes = 0
        self.armed: MultishotOp | None = None
        self.eof = False
        self.error: OSError | None = None
        self.starved = False  # the last operation ended with ENOBUFS
        self.starvations = 0  # how often (for tests and diagnostics)
        self.receives = 0  # counted up to BUSY_AFTER (see the module's notes)
        self.direct_hits = 0  # direct receives in a row that found bytes
        self.task = None  # the reader, while it waits
        self.trap = None  # (Spot: its __init__, spelled out)

    # -- the reader -----------------------------------------------------------

    def idle(self) -> bool:
        """Nothing armed and nothing waiting for the reader."""
        return self.armed is None and not self.ready

    def has_data(self) -> bool:
        return bool(self.ready) or self.eof or self.error is not None

    @enable_ki_protection  # (Ctrl+C waits: posted and armed, or neither)
    def arm(self, stream: Any) -> None:
        """Arm the receive, capped at ``k * buffersize`` bytes in total."""
        engine = self._engine
        pool = engine.buffer_pool(stream.buffersize)
        op = MultishotOp(engine.new_id(), self, pool, stream)
        fd = stream.fd
        lone = self.direct_hits >= DIRECT_HITS and not engine.load.batched(engine.counters)
        self.direct_hits = 0
        if self.receives < BUSY_AFTER or lone:  # one completion
            engine.post_registered(op, lib.iou_prep_recv_select, fd, pool.bgid)
        else:
            cap = stream.abd.k * stream.buffersize
            engine.post_registered(op, lib.iou_prep_recv_multishot, fd, pool.bgid, cap)
        self.armed = op
        self.starved = False

    def take(self, max_bytes: int, buffersize: int) -> bytes:
        """At most ``max_bytes`` from the front (read_ahead.take_ready)."""
        ready = self.ready
        data = ready[0]
        size = len(data)
        if size <= max_bytes and len(ready) == 1:
            # (the usual case, take_ready's, spelled out: one chunk waiting)
            del ready[0]
        else:  # the chunks that fit, joined; or a long chunk's head
            data = take_ready(ready, max_bytes, buffersize)
            size = len(data)
        self.ready_bytes -= size
        return data

    def pending(self) -> list[MultishotOp]:
        armed = self.armed
        return [armed] if armed is not None and not armed.done else []
