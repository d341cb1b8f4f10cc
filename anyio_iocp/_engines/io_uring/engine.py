"""The io_uring engine: completion-based socket I/O on Linux.

The model
---------
A socket operation (accept, receive, send) is *posted* as a submission
queue entry before the event it waits for has happened.  The kernel performs it
when it can and posts a completion queue entry: "here is what got done".  The
program never asks "is this socket ready?".  (A connect is the exception:
``connect()`` is called directly, since on loopback the handshake is over
before it returns, and only a handshake still under way is waited for, with a
poll posted to the ring: :mod:`anyio_iocp._interface.connecting`.)

Driving the ring from Trio, without a thread
--------------------------------------------
* Tasks prepare entries in the shared submission ring (C, ``iou_prep_*``); no
  system call happens then.  Once per scheduler pass, just before Trio waits for
  I/O, the instrument hook :meth:`UringEngine.before_io_wait` hands everything
  prepared during that pass to the kernel with one ``io_uring_enter``.
* The ring's file descriptor is readable while completions are waiting, and
  it sits in Trio's own epoll set (:mod:`._uring_wakeup`), so that Trio's
  ``epoll_wait`` returns for completions without a task to wake.  (Where that
  set cannot be reached, a system task sleeps in
  ``trio.lowlevel.wait_readable(ring_fd)`` instead.)  The completions themselves
  are reaped right after the I/O wait (:meth:`UringEngine.after_io_wait`) in
  batches that the C shim copies into one array, and the waiting tasks are
  rescheduled in the same pass.  ``before_io_wait`` reaps too, but only when
  the loop will not sleep: otherwise Trio has already chosen how long to
  sleep, and tasks woken then would wait that long.

The traps, and what this module does about them
-----------------------------------------------
* Memory lent to the kernel (receive buffers, send data, socket addresses) must
  outlive the operation.  Each :class:`UringOp` holds a reference to its memory, and
  the engine's table holds the op until its *final* completion is reaped,
  whatever happens to the task that posted it (cancelled, failed, gone).
* Cancelling the waiting task does not cancel the operation.  For a receive the
  operation stays posted and its bytes go to the next ``receive()``; for an
  accept the connection goes to the next ``accept()``.  For a send, the
  operation is cancelled in the kernel (``IORING_OP_ASYNC_CANCEL``) and the
  task waits for the completion before Cancelled propagates: the completion
  tells whether it happened after all.  A connect's poll is cancelled the same
  way, and the attempt is abandoned (the caller closes the socket).
* Closing a stream or listener cancels its operations and waits for their
  completions before the descriptor is closed.  At the end of the run every op
  still in the table is cancelled and drained before the ring is unmapped.
* The submission ring can be full: the engine then submits at once and retries,
  so the user never sees it.  The completion ring can overflow when the reaper
  falls behind: the kernel (``IORING_FEAT_NODROP``) parks completions on an
  overflow list that the shim flushes while reaping.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import select
import socket
import time
from collections import Counter
from collections.abc import Callable
from time import perf_counter
from typing import Any

import trio
from trio.lowlevel import enable_ki_protection

from anyio_iocp._engines.io_uring._uring import ffi, lib
from anyio_iocp._engines.io_uring.fork import track as track_for_fork
from anyio_iocp._engines.io_uring.listener import UringListenerIO
from anyio_iocp._engines.io_uring.messages import UringMessageIO
from anyio_iocp._engines.io_uring.multishot import BufferPool, PassLoad
from anyio_iocp._engines.io_uring.op import UringOp
from anyio_iocp._engines.io_uring.quiet_sends import (
    COUNT_MASK,
    QUIET_TAG,
    QuietSends,
    SendersPerPass,
)
from anyio_iocp._engines.io_uring.spin import SpinState, look_for_completions
from anyio_iocp._engines.io_uring.stream import UringStreamIO, open_stream_io
from anyio_iocp._engines.io_uring.submit_retry import SubmitRetry
from anyio_iocp._engines.io_uring.wakeup import EpollRingWatch, ring_watch
from anyio_iocp._flow.look_after_send import LooksAfterSends
from anyio_iocp._interface import trace as _trace
from anyio_iocp._interface.budget import ScheduleBudget
from anyio_iocp._interface.completion import CompletionWaits
from anyio_iocp._interface.connecting import connect_stream
from anyio_iocp._interface.engine import (
    Engine,
    EngineInfo,
    ListenerIO,
    MessageIO,
    StreamIO,
    oserror,
)
from anyio_iocp._interface.settings import Tuning
from anyio_iocp._interface.stats import EngineCounters, uncount

_log = logging.getLogger("anyio_iocp")

# The shim's functions called on every scheduler pass, looked up once: an
# attribute of the cffi library is a full lookup each time (16 ns more)
_cq_ready = lib.iou_cq_ready
_unsubmitted = lib.iou_unsubmitted
_reap_columns = lib.iou_reap_columns
_column = ffi.unpack

#: submission and completion ring sizes (detection probes these same sizes)
RING_ENTRIES = 4096
RING_CQ_ENTRIES = 4 * RING_ENTRIES
#: how long the end of a run waits for the last completions (streams wait
#: for their write-behind sends at close: send_chain.CLOSE_DRAIN_SECONDS)
RUN_END_DRAIN_SECONDS = 5.0
#: as the run ends, without the ring in Trio's epoll set: how often the
#: reaper looks at the ring while a dropped stream is being closed
DROPPED_CLOSE_POLL_SECONDS = 0.01
#: completions copied out of the ring per call into the shim
REAP_BATCH = 1024
#: user_data of requests whose completions nobody waits for (cancel requests)
IGNORED = 0
#: what a preparing call returns when the submission ring is full (made
#: once: an int this size is a new object each time it is computed, which
#: a post must not make after its entry is prepared)
RING_FULL = -errno.EBUSY
#: largest single send handed to the kernel (the length field is 32 bits)
SEND_FLAGS = lib.MSG_NOSIGNAL | lib.MSG_WAITALL
F_MORE = lib.IORING_CQE_F_MORE
#: buffer pools of the multishot receives: about POOL_BYTES each, in
#: POOL_MIN_ENTRIES..POOL_MAX_ENTRIES buffers
POOL_BYTES = 16 << 20
POOL_MIN_ENTRIES = 16
POOL_MAX_ENTRIES = 1024
RECV_MODE_ENV = "ANYIO_IOCP_RECV"
#: how a send that finds nothing pending goes: "auto" (quiet while recent
#: scheduler passes had several sending streams each), "ring" (always quiet) or
#: "direct" (never quiet); for comparing them
SEND_MODE_ENV = "ANYIO_IOCP_SEND"
SEND_MODES = ("auto", "ring", "direct")
#: the shim's preparing function of a posted operation -> its kind in the statistics
_KINDS = {
    lib.iou_prep_accept: "accept",
    lib.iou_prep_poll: "connect",  # the wait for a handshake under way
    lib.iou_prep_recvmsg: "recvmsg",
    lib.iou_prep_sendmsg: "sendmsg",
    lib.iou_prep_recv_multishot: "recv_multishot",
    lib.iou_prep_recv_select: "recv_select",
}


class SendOp(UringOp):
    """A send; its stream hears of the completion before the waiting task."""

    __slots__ = ("pipelined", "stream")

    def __init__(
        self, user_data: int, keep: object, stream: UringStreamIO, pipelined: bool
    ) -> None:
        super().__init__(user_data, keep, (keep,))
        self.stream = stream
        self.pipelined = pipelined

    def complete(self, res: int, flags: int) -> None:
        self.result = res
        self.done = True
        self.stream.on_send_complete(self)
        self.wake()


class UringEngine(Engine, CompletionWaits[UringOp]):
    def __init__(self, info: EngineInfo) -> None:
        self.info = info
        self.counters = EngineCounters()
        self.budget = ScheduleBudget()
        #: what looks right after a send found (look_after_send)
        self.looks = LooksAfterSends()
        #: operations posted through _post, by preparing function
        self._posted_by_prep: dict[Any, int] = {}
        ring_pp = ffi.new("iou_ring **")
        details = dict(info.details)
        # Completions that arrive while the loop runs Python wait for its next
        # system call (each pass makes one: epoll_wait) instead of
        # interrupting it; a loop asleep in epoll_wait is still woken.
        # Measured with bench/run.py --pin split (server and load generator on
        # separate CPUs, so that every completion found the server running):
        # echo on 64 connections went from 0.80x to 1.08x Trio, echo on one
        # connection from 1.15x to 1.01x Trio's round trip (docs/performance.md).
        self.ring_flags = lib.IORING_SETUP_COOP_TASKRUN if details.get("coop_taskrun") else 0
        rc = lib.iou_open(ring_pp, RING_ENTRIES, RING_CQ_ENTRIES, self.ring_flags)
        if rc == -errno.EINVAL and self.ring_flags:
            # the probe's small ring took the flag and this one did not:
            # run without it rather than not at all
            self.ring_flags = 0
            rc = lib.iou_open(ring_pp, RING_ENTRIES, RING_CQ_ENTRIES, 0)
            if _trace.active and rc >= 0:
                _trace.emit(
                    "engine.fallback",
                    "io_uring: the ring refused IORING_SETUP_COOP_TASKRUN (EINVAL) "
                    "although the probe took it: running without it",
                    flag="COOP_TASKRUN",
                )
        if rc < 0:
            raise oserror(rc, "io_uring_setup")
        self._ring = ring_pp[0]
        self.fd = lib.iou_fd(self._ring)
        #: longest linked chain: one chain must fit in the submission ring
        self.max_chain: int = lib.iou_sq_entries(self._ring)
        self._ops: dict[int, UringOp] = {}
        self._next_id = 1
        # a batch of completions, as three columns (iou_reap_columns)
        self._cq_user_data = ffi.new("uint64_t[]", REAP_BATCH)
        self._cq_res = ffi.new("int32_t[]", REAP_BATCH)
        self._cq_flags = ffi.new("uint32_t[]", REAP_BATCH)
        self.closed = False
        self._reaper_started = False
        self._reaping = False
        # strong references: a listener dropped without aclose() must still
        # have its queued connections closed at the end of the run
        self._listeners: set[UringListenerIO] = set()
        self._sends_to_post: list[UringStreamIO] = []
        self._pending_cancels: list[UringOp] = []
        # streams receive with one multishot receive each, into shared buffer
        # pools (one per buffer size), where the kernel has it
        # ($ANYIO_IOCP_RECV=single turns it off, to compare)
        self.multishot_recv = bool(details.get("multishot_recv")) and (
            os.environ.get(RECV_MODE_ENV, "multishot") != "single"
        )
        self._pools: dict[int, BufferPool] = {}
        #: sends whose successful completions the C reaper counts (quiet_sends)
        self.quiet = QuietSends(self._ring)
        #: sending streams per pass: when sends go quiet ("auto")
        self.senders = SendersPerPass()
        mode = os.environ.get(SEND_MODE_ENV, "auto")
        if mode not in SEND_MODES:
            lib.iou_close(self._ring)
            raise ValueError(f"{SEND_MODE_ENV}={mode!r}: expected one of {', '.join(SEND_MODES)}")
        self.send_mode = mode
        #: quiet sends now or not (decided once per pass: quiet_sends_now)
        self.quiet_now = mode == "ring"
        #: passes, and completions per reap: how a stream that must wait arms
        self.load = PassLoad()
        #: the look for completions before a sleep (.spin)
        self.spin = SpinState()
        self._retry = SubmitRetry()  # wakes the loop to resubmit refused entries
        #: the ring in Trio's epoll set; None: the reaper task waits on the ring
        self._watch: EpollRingWatch | None = None
        track_for_fork(self)  # a forked child lets go of this ring
        if _trace.active:
            self._trace_setup(details)

    def _trace_setup(self, details: dict[str, Any]) -> None:
        mode = "multishot" if self.multishot_recv else "single"
        _trace.emit(
            "engine.setup",
            f"io_uring: ring fd {self.fd}, {self.max_chain} submission and "
            f"{lib.iou_cq_entries(self._ring)} completion entries, "
            f"COOP_TASKRUN {'on' if self.ring_flags else 'off'}, {mode} receives",
            fd=self.fd,
            sq_entries=self.max_chain,
            cq_entries=lib.iou_cq_entries(self._ring),
            coop_taskrun=bool(self.ring_flags),
            receives=mode,
        )
        if not details.get("multishot_recv"):
            _trace.emit(
                "engine.fallback",
                "io_uring: the kernel has no capped multishot receive (Linux 6.17): "
                "streams post single receives with buffers of their own",
                feature="multishot_recv",
            )

    # -- posting -------------------------------------------------------------

    def check_open(self) -> None:
        if self.closed:
            raise OSError(
                errno.EBADF, "the run that created this socket has ended: its io_uring is closed"
            )

    @enable_ki_protection  # posted and registered, or neither (Ctrl+C waits)
    def _post(self, op: UringOp, prep: Callable[..., int], *args: Any) -> None:
        """Prepare ``op``'s entry with ``prep``, registered and counted first.

        An entry in the ring outlives whatever fails after it is written:
        the kernel takes it at the pass's submission.  So the count and the
        table's entry come first, and only the preparing call comes after
        them; one that fails (the ring full even after a submission, the
        ring closed) wrote no entry, and both are taken out again.  An owner
        lists the operation after this returns, or before it and undoes its
        list while :meth:`holds` says no (``docs/design.md``, "Memory lent
        to the kernel")."""
        self.check_open()
        registered = self._ops
        uid = op.user_data
        # counted by preparing function (named in the statistics): no lookup here
        op.kind = prep
        posted = self._posted_by_prep
        posted[prep] = posted.get(prep, 0) + 1
        try:
            registered[uid] = op
            rc: int = prep(self._ring, *args)
            if rc:  # (nothing is computed after a preparing call that worked)
                if rc == RING_FULL:
                    self._free_room()
                    rc = prep(self._ring, *args)
                if rc < 0:
                    raise oserror(rc, "io_uring submission")
        except BaseException:
            registered.pop(uid, None)
            uncount(posted, prep)
            raise

    def _free_room(self) -> None:
        """The submission ring is full: hand it to the kernel now.  In a task
        (not while reaping) completions may be reaped first, if the kernel
        asks for room in the completion ring before it takes more."""
        if self._submit() < 0:
            self._reap_now()
            self._submit()

    def holds(self, op: UringOp) -> bool:
        """Whether ``op`` is registered: from just before its entry is
        prepared (:meth:`_post`) until its last completion is reaped."""
        return self._ops.get(op.user_data) is op

    def new_id(self) -> int:
        """The user_data of the next operation."""
        uid = self._next_id
        self._next_id = uid + 1
        return uid

    def post_registered(self, op: Any, prep: Callable[..., int], *args: Any) -> None:
        """Post ``op`` (built with :meth:`new_id`) and register it."""
        self._post(op, prep, *args, op.user_data)

    def buffer_pool(self, size: int) -> BufferPool:
        """The provided buffer ring for receives of ``size`` bytes."""
        pool = self._pools.get(size)
        if pool is None:
            self.check_open()
            entries = max(POOL_MIN_ENTRIES, min(POOL_MAX_ENTRIES, POOL_BYTES // size))
            entries = 1 << (entries.bit_length() - 1)  # a power of two
            pool = self._pools[size] = BufferPool(self._ring, len(self._pools), entries, size)
        return pool

    def _make_room(self, n: int) -> None:
        """A linked chain must reach the kernel in one submission."""
        self.check_open()
        if lib.iou_sq_space(self._ring) < n:
            self._free_room()
            if lib.iou_sq_space(self._ring) < n:
                raise OSError(errno.EBUSY, f"io_uring submission queue too small for {n} entries")

    def _post_chain(
        self,
        ops: list[Any],
        kind: str,
        listing: list[Any],
        opcode: int,
        fd: int,
        buffers: Any,
        lengths: Any,
        msg_flags: int,
    ) -> None:
        """Register, count and list (in ``listing``, the stream's) the
        operations of a chain, then prepare all its entries in one call
        (``iou_prep_chain``, on ``buffers`` and ``lengths``, cffi arrays):
        all of it, or none of it on a failure."""
        registered = self._ops
        user_data = ffi.new("uint64_t[]", [op.user_data for op in ops])
        counted = listed = False
        try:
            for op in ops:
                op.kind = kind
                registered[op.user_data] = op
            self.counters.count_posted(kind, len(ops))
            counted = True
            listing.extend(ops)
            listed = True
            rc = lib.iou_prep_chain(
                self._ring, opcode, fd, buffers, lengths, user_data, msg_flags, len(ops)
            )
            if rc:
                raise oserror(rc, "io_uring submission")
        except BaseException:
            # (no entry was prepared; the undoing only shrinks)
            for op in ops:
                registered.pop(op.user_data, None)
            if listed:
                for _ in ops:
                    listing.pop()
            if counted:
                self.counters.uncount_posted(kind, len(ops))
            raise

    @enable_ki_protection
    def post_recv_chain(self, fd: int, buffers: list[Any], size: int, posted: list[Any]) -> None:
        """Receives into ``buffers``, linked so that the kernel runs them in
        order, added to ``posted`` (the stream's list of its receives).

        Every object is made, registered, counted and listed before the
        chain's entries are prepared, all in one call (:meth:`_post_chain`):
        a failure for want of memory leaves no entry of a chain without its
        operation, no receive that the stream does not know of (its bytes
        would be lost), and no entry linked to one outside its chain."""
        self._make_room(len(buffers))
        ops = [UringOp(self.new_id(), buf) for buf in buffers]
        pointers = ffi.new("void *[]", buffers)
        lengths = ffi.new("unsigned[]", [size] * len(buffers))
        self._post_chain(ops, "recv", posted, lib.IORING_OP_RECV, fd, pointers, lengths, 0)

    @enable_ki_protection
    def post_send_chain(
        self,
        fd: int,
        chunks: list[Any],
        stream: UringStreamIO,
        pipelined: bool,
        sending: list[Any],
    ) -> list[SendOp]:
        """Sends of ``chunks``, linked so that their bytes leave in order,
        added to ``sending`` (the stream's list of its sends).

        As for a chain of receives, a failure on the way prepares nothing:
        no send the caller is told failed goes out.  It also lets go of the
        chunks' views at once (:class:`UringOp`: no view of the caller's
        memory left to a traceback)."""
        self._make_room(len(chunks))
        views: list[Any] = []
        try:
            for chunk in chunks:
                views.append(ffi.from_buffer(chunk))
            pointers = ffi.new("void *[]", views)
            lengths = ffi.new("unsigned[]", [len(view) for view in views])
            ops = [SendOp(self.new_id(), view, stream, pipelined) for view in views]
            self._post_chain(
                ops, "send", sending, lib.IORING_OP_SEND, fd, pointers, lengths, SEND_FLAGS
            )
        except BaseException:
            for view in views:
                ffi.release(view)
            raise
        return ops

    def set_send_mode(self, mode: str) -> None:
        """How sends that find nothing pending go from now on (``SEND_MODES``)."""
        if mode not in SEND_MODES:
            raise ValueError(f"send mode {mode!r}: expected one of {', '.join(SEND_MODES)}")
        self.send_mode = mode
        self.quiet_now = self.quiet_sends_now()

    def quiet_sends_now(self) -> bool:
        """Whether a send that finds nothing pending goes quiet (one system
        call per pass for every stream's sends), or direct (one each, but
        at once): quiet while recent passes had several sending streams each.
        Asked once per pass; streams read ``quiet_now``."""
        mode = self.send_mode
        return mode == "ring" or (mode == "auto" and self.senders.many(self.load.passes))

    @enable_ki_protection  # posted and kept, or neither
    def post_quiet_send(self, stream: UringStreamIO, data: bytes, slot: int, size: int) -> None:
        """Post a quiet send of ``data`` (``size`` bytes, see :mod:`.quiet_sends`)
        from ``slot``.

        As in :meth:`_post`, what can fail comes before the entry: the bytes
        are kept (the kernel reads them until the slot's count covers the
        send) and the new counts are computed; after it, only stores."""
        if self.closed:
            self.check_open()
        quiet = self.quiet
        # (the slot's last quiet send has completed: its bytes may go)
        quiet.keep[slot] = data
        posted = quiet.posted + 1
        count = (stream.qposted + 1) & COUNT_MASK
        rc: int = lib.iou_prep_send_quiet(self._ring, stream.fd, data, size, SEND_FLAGS, slot)
        if rc:  # (as in _post: nothing computed after a preparing call that worked)
            if rc == RING_FULL:
                self._free_room()
                rc = lib.iou_prep_send_quiet(self._ring, stream.fd, data, size, SEND_FLAGS, slot)
            if rc < 0:
                raise oserror(rc, "io_uring submission")
        quiet.posted = posted
        stream.qposted = count
        stream.qlength = size

    def submit_now(self) -> None:
        """Hand the entries prepared so far to the kernel now, in the middle
        of a pass, and reap what that completed (a quiet send that another
        send of its stream must follow)."""
        if self.closed:
            return
        if _unsubmitted(self._ring) and self._submit() < 0:
            return  # refused for now: the entries wait for the pass's submission
        self._reap_now()

    def quiet_op(self, slot: int, length: int) -> UringOp:
        """A quiet send in flight as an operation (to cancel and drain)."""
        return self.quiet.op(slot, length, self._ops)

    def post_later(self, stream: UringStreamIO) -> None:
        """Post ``stream``'s queued sends at the end of this scheduler pass."""
        self._sends_to_post.append(stream)

    def post_op(self, keep: object, prep: Callable[..., int], *args: Any) -> UringOp:
        """Post one operation; ``keep`` holds its memory until the completion."""
        op = self.new_op(keep)
        self._post(op, prep, *args, op.user_data)
        return op

    def new_op(self, keep: object, pins: tuple[Any, ...] = ()) -> UringOp:
        """An operation, made but not posted (:meth:`post_registered`).
        ``pins``: its ``ffi.from_buffer`` views, released when its final
        completion is reaped, or by its owner if it is not posted; at once
        if it cannot be made (no view left to a traceback)."""
        try:
            return UringOp(self.new_id(), keep, pins)
        except BaseException:
            for pin in pins:
                ffi.release(pin)
            raise

    def request_cancel(self, op: UringOp) -> None:
        """Ask the kernel to cancel ``op``; never raises (it runs in abort
        functions): a cancel that finds no room is retried every pass."""
        if op.done or op.cancel_requested or self.closed:
            return
        if lib.iou_prep_cancel(self._ring, op.user_data, IGNORED) == 0:
            op.cancel_requested = True
        elif op not in self._pending_cancels:
            self._pending_cancels.append(op)

    def _submit(self) -> int:
        """Enter the kernel once with everything prepared.  EAGAIN and EBUSY
        (short of memory, or completions waiting on the overflow list) leave
        the entries prepared for the next pass and are returned; other errors
        are raised."""
        rc: int = lib.iou_submit(self._ring, 0)
        if rc > 0:
            counters = self.counters
            counters.submits += 1
            counters.submitted += rc
        elif rc < 0 and rc not in (-errno.EAGAIN, -errno.EBUSY):
            raise oserror(rc, "io_uring_enter")
        return rc

    # -- scheduler hooks -----------------------------------------------------

    def before_io_wait(self, timeout: float) -> float | None:
        # Reap here only when the loop will not sleep (timeout 0): otherwise
        # Trio has chosen how long to sleep already, and tasks woken now would
        # wait for that.  If the kernel refuses for now, the entries stay
        # prepared and the retry timer (or a waiting completion) wakes the
        # loop to submit them.
        if self.closed:
            return None
        if self._pending_cancels:
            retry, self._pending_cancels = self._pending_cancels, []
            for op in retry:
                self.request_cancel(op)
        if self._sends_to_post:
            streams, self._sends_to_post = self._sends_to_post, []
            for stream in streams:
                stream.post_queued_sends()
        ring = self._ring
        if _unsubmitted(ring) and self._retry.due():
            self._submit()
            if _unsubmitted(ring):
                self._retry.refused()
                if _trace.active:
                    _trace.emit(
                        "ring.submit_retry",
                        f"io_uring: the kernel left {lib.iou_unsubmitted(ring)} entries "
                        f"unsubmitted; retrying in {self._retry.delay * 1000:.0f} ms",
                        unsubmitted=lib.iou_unsubmitted(ring),
                        delay=self._retry.delay,
                        refusals=self._retry.refusals,
                    )
            else:
                self._retry.accepted()
        if timeout == 0:
            # Tasks are runnable, so the I/O wait will not block.  Completions
            # reaped now wake their tasks in this pass, and leave the ring
            # unreadable for the wait (no wake-up just to find them gone).
            # (The ring is checked here, not in a call: this runs every pass.)
            if _cq_ready(ring):
                self._reap_found()
        else:
            # the wait may block: look first if the last sleep was short
            # (.spin), then completions must end it
            spin = self.spin
            seconds = self.spin_seconds
            start = spin.sleep_from = perf_counter()
            looked = bool(seconds) and spin.last_sleep <= seconds
            if looked:
                spin.looks += 1
                if look_for_completions(ring, min(seconds, timeout)):
                    spin.found += 1
                    # The wait returns at once (timeout 0): the ring's watch
                    # need not be armed for it, and arming it here would put
                    # a system call between the completion and its task.
                    return 0.0
            if self._watch is not None and not self._watch.armed:
                self._watch.arm()
            if looked:
                return max(0.0, timeout - (perf_counter() - start))  # the deadline stays
        return None

    def after_io_wait(self) -> None:
        """After Trio's I/O wait, once per pass (see :mod:`anyio_iocp._internals.pass_hooks`)."""
        if self.spin.sleep_from:
            self._end_sleep()
        self.budget.new_pass()
        load = self.load
        passes = load.passes = load.passes + 1
        if self.send_mode == "auto" and passes >= self.senders.window_ends:
            self.quiet_now = self.senders.many(passes)
        if (
            not self.closed
            and _cq_ready(self._ring)
            and self._reap_found()
            and self._watch is not None
        ):
            self._watch.may_have_fired()

    def _end_sleep(self) -> None:
        """The pass could block: how long it took, if completions ended it
        (anything else, as a thread's run_sync_soon or a socket in Trio's
        epoll set, would not be seen by a look: none next time)."""
        spin = self.spin
        ended_by_ring = not self.closed and _cq_ready(self._ring)
        spin.last_sleep = perf_counter() - spin.sleep_from if ended_by_ring else math.inf
        spin.sleep_from = 0.0

    def _reap_now(self) -> bool:
        """Reap what the completion ring holds; False when there was nothing
        (an empty ring costs one C call) or reaping is already under way."""
        if self.closed or not _cq_ready(self._ring):
            return False
        return self._reap_found()

    @enable_ki_protection  # a batch is handed out whole (Ctrl+C waits), also from a task
    def _reap_found(self) -> bool:
        """:meth:`_reap_now` where the caller saw completions on the ring of
        an engine still open; False when reaping is already under way.

        A task reaps too (``reap_ready``, ``submit_now``), and a task's code
        is not protected from KeyboardInterrupt: a batch cut short there would
        lose the completions it had taken off the ring but not handed out."""
        if self._reaping:
            return False
        if _trace.active and lib.iou_sq_flags(self._ring) & lib.IORING_SQ_CQ_OVERFLOW:
            _trace.emit(
                "ring.cq_overflow",
                f"io_uring: the completion ring ({lib.iou_cq_entries(self._ring)} entries) "
                "overflowed; the kernel kept the rest on its overflow list, reaped now",
                cq_entries=lib.iou_cq_entries(self._ring),
            )
        self._reaping = True
        try:
            self._reap()
        finally:
            self._reaping = False
        return True

    def reap_ready(self) -> None:
        """Reap completions already in the ring, from a task (no system call).

        A task about to wait for a completion calls this first: the kernel
        often finished while the task ran (on loopback, the peer's reply is
        there by the time the request went out), and reaping it here saves a
        pass through the I/O wait."""
        if not self.closed and _cq_ready(self._ring):  # (_reap_now, inlined)
            self._reap_found()

    def _reap(self) -> None:
        ring, user_data, res, flags = self._ring, self._cq_user_data, self._cq_res, self._cq_flags
        counters = self.counters
        while True:
            n = _reap_columns(ring, user_data, res, flags, REAP_BATCH)
            if n:
                counters.completions += n
                counters.reaps += 1
                try:
                    self._complete_batch(n)
                finally:
                    # the batch's receive buffers, their bytes copied out
                    for pool in self._pools.values():
                        if pool.taken:
                            pool.give_back()
            if n < REAP_BATCH:
                return

    def _complete_batch(self, n: int) -> None:
        """Hand the first ``n`` reaped completions to their operations."""
        ops = self._ops
        # each column a list in one call: a struct's fields cost a lookup each
        for uid, res, flags in zip(
            _column(self._cq_user_data, n),
            _column(self._cq_res, n),
            _column(self._cq_flags, n),
            strict=True,
        ):
            if uid == IGNORED:
                continue
            if uid & QUIET_TAG:
                # a quiet send that failed, or that a task waits for
                self.quiet.reported(uid, res)
                if uid not in ops:
                    continue  # (an operation only while closing: quiet_op)
            op = ops.get(uid) if flags & F_MORE else ops.pop(uid, None)
            if op is None:
                _log.error("io_uring completion for unknown user_data %d", uid)
                continue
            try:
                op.complete(res, flags)
            except Exception:
                # one faulty completion must not lose the rest of the batch
                _log.exception("completion handler failed")
            finally:
                if op.pins and not flags & F_MORE:
                    op.release_pins()

    def ensure_reaper(self) -> None:
        if not self._reaper_started:
            self._reaper_started = True
            self._watch = ring_watch(self.fd)
            trio.lowlevel.spawn_system_task(self._reaper, name="anyio_iocp io_uring reaper")

    async def _reaper(self) -> None:
        # Only here to wake the loop: when a refused submission is due again,
        # and, without the ring in Trio's epoll set, for completions.  The
        # reaping itself happens in after_io_wait, in the same scheduler pass.
        ring_fd = None if self._watch is not None else self.fd
        try:
            while True:
                await self._retry.wait(ring_fd)
                self.after_io_wait()
        finally:
            if ring_fd is not None:
                with trio.CancelScope(shield=True):
                    await self._wake_for_closes(ring_fd)

    async def _wake_for_closes(self, ring_fd: int) -> None:
        """The run is ending, and nothing else wakes the loop for completions
        (the ring is not in Trio's epoll set): keep waking it while a stream
        the program dropped is being closed, since its close waits for the
        completions of its cancelled operations (bounded)."""
        leftovers = self.leftovers
        with trio.move_on_after(RUN_END_DRAIN_SECONDS):
            while leftovers.closing:
                with trio.move_on_after(DROPPED_CLOSE_POLL_SECONDS):
                    await trio.lowlevel.wait_readable(ring_fd)
                self.after_io_wait()

    # -- Engine interface ----------------------------------------------------

    def open_stream(self, sock: socket.socket, tuning: Tuning) -> StreamIO:
        self.ensure_reaper()
        self.counters.streams += 1
        return open_stream_io(self, sock, tuning)

    def in_flight(self) -> dict[str, int]:
        by_kind: Counter[str] = Counter()
        for op in self._ops.values():
            if op.kind != "send_quiet":  # counted below
                by_kind[_kind_name(op.kind)] += 1
        if self.quiet.posted:
            by_kind["send_quiet"] = self.quiet.in_flight()
        return dict(by_kind)

    def posted_by_kind(self) -> dict[str, int]:
        posted = dict(self.counters.posted)
        if self.quiet.posted:
            posted["send_quiet"] = self.quiet.posted
        for prep, n in self._posted_by_prep.items():
            name = _kind_name(prep)
            posted[name] = posted.get(name, 0) + n
        return posted

    def passes(self) -> int:
        return self.load.passes

    def completions(self) -> int:
        # with the quiet sends' that the C reaper counted and did not copy out
        return self.counters.completions + int(self.quiet.table.skipped)

    def open_messages(self, sock: socket.socket) -> MessageIO:
        self.ensure_reaper()
        return UringMessageIO(self, sock)

    @enable_ki_protection  # (Ctrl+C waits: a listener handed out, or none posting)
    def open_listener(self, sock: socket.socket, tuning: Tuning) -> ListenerIO:
        self.ensure_reaper()
        listener = UringListenerIO(self, sock, tuning)
        try:
            self._listeners.add(listener)
        except BaseException:
            listener.let_go()  # (its accepts would keep the socket open)
            raise
        self.counters.listeners += 1
        return listener

    def forget_listener(self, listener: UringListenerIO) -> None:
        self._listeners.discard(listener)

    async def connect(self, sock: socket.socket, address: Any) -> None:
        # connect() directly: on loopback the handshake is over before it
        # returns (anyio_iocp._interface.connecting); a handshake still under
        # way is waited for with a poll posted to the ring
        self.ensure_reaper()
        await connect_stream(sock, address, self.budget, self.counters, self._wait_handshake)

    async def _wait_handshake(self, sock: socket.socket) -> None:
        op = self.post_op(None, lib.iou_prep_poll, sock.fileno(), select.POLLOUT)
        await self.wait_or_cancel(op)
        if op.result < 0:
            raise oserror(op.result, "poll for the end of a connect")

    def close(self) -> None:
        """End of the run: cancel and drain everything, then release the ring.

        The wait for the last completions is bounded (RUN_END_DRAIN_SECONDS) and
        interruptible.  Operations still in flight after it are abandoned, not
        freed: their memory is kept alive for the life of the process, since
        the kernel may still touch it while it tears the ring down.
        """
        if self.closed:
            return
        if self._ops and _trace.active:
            _trace.operations_left("io_uring", self.in_flight())
        for listener in list(self._listeners):
            listener.discard_queued()
        for stream in list(self.quiet.streams.values()):
            stream.quiet_ops()  # quiet sends still in flight become operations
        self.cancel_at_end(list(self._ops.values()))  # every task of the run has finished
        for op in self._pending_cancels:
            self.request_cancel(op)
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        deadline = time.monotonic() + RUN_END_DRAIN_SECONDS
        try:
            while self._ops:
                self._submit()
                self._reap()
                remaining = deadline - time.monotonic()
                if not self._ops or remaining <= 0:
                    break
                poller.poll(min(remaining, 0.1) * 1000)
                for listener in list(self._listeners):
                    listener.discard_queued()
        finally:
            abandoned = self.keep_uncompleted(
                self._ops.values(), "io_uring operations", "their buffers are kept alive"
            )
            self.closed = True
            self._listeners.clear()
            if self._watch is not None:
                self._watch.close()
            lib.iou_close(self._ring)
            self._ring = ffi.NULL
            for pool in self._pools.values():
                if abandoned:
                    _abandoned_pools.append(pool)  # an operation may still pick from it
                else:
                    pool.close(ffi.NULL)
            self._pools.clear()

    def disown(self) -> None:
        """In a forked child: release this process's copy of the parent's ring
        (descriptor, mappings) without submitting or reaping anything."""
        if self.closed:
            return
        self.closed = True
        self._ops.clear()
        self._listeners.clear()
        self._watch = None  # the parent's registration, in the parent's epoll set
        lib.iou_close(self._ring)
        self._ring = ffi.NULL
        # the buffer pools are this process's copies of the parent's memory:
        # forgotten, not unmapped (the parent's kernel operations may use the
        # parent's pages; the child's copies are simply never used)
        self._pools.clear()


def _kind_name(kind: Any) -> str:
    """An op's kind as the statistics name it: a name already, or the
    preparing function it was posted with."""
    return kind if isinstance(kind, str) else _KINDS.get(kind, "other")


#: buffer pools of a ring that closed with operations not completed
_abandoned_pools: list[BufferPool] = []
