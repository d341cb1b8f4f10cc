"""The io_uring engine: completion-based socket I/O on Linux.

The model
---------
A socket operation (accept, connect, receive, send) is *posted* as a submission
queue entry before the event it waits for has happened.  The kernel performs it
when it can and posts a completion queue entry: "here is what got done".  The
program never asks "is this socket ready?".

Driving the ring from Trio, without a thread
--------------------------------------------
* Tasks prepare entries in the shared submission ring (C, ``iou_prep_*``); no
  system call happens then.  Once per scheduler pass, just before Trio waits for
  I/O, the instrument hook :meth:`UringEngine.before_io_wait` hands everything
  prepared during that pass to the kernel with one ``io_uring_enter``.
* The ring's file descriptor is readable while completions are waiting.  A
  system task sleeps in ``trio.lowlevel.wait_readable(ring_fd)`` so that Trio's
  epoll wakes up for completions.  The completions themselves are reaped right
  after the I/O wait (:meth:`UringEngine.after_io_wait`) in batches that the C
  shim copies into one array, and the waiting tasks are rescheduled in the same
  pass.  (Reaping in ``before_io_wait`` would be wrong: Trio has already chosen
  its sleep time, and an emptied completion ring would no longer wake it.)

The traps, and what this module does about them
-----------------------------------------------
* Memory lent to the kernel (receive buffers, send data, socket addresses) must
  outlive the operation.  Each :class:`Op` holds a reference to its memory, and
  the engine's table holds the op until its *final* completion is reaped,
  whatever happens to the task that posted it (cancelled, failed, gone).
* Cancelling the waiting task does not cancel the operation.  For a receive the
  operation stays posted and its bytes go to the next ``receive()``; for an
  accept the connection goes to the next ``accept()``.  For a send or a
  connect, the operation is cancelled in the kernel (``IORING_OP_ASYNC_CANCEL``)
  and the task waits for the completion before Cancelled propagates: the
  completion tells whether it happened after all.
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
import os
import socket
import struct
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import trio
from trio.lowlevel import Abort, Task

from ._engine import Engine, EngineInfo, ListenerIO, StreamIO, oserror
from ._tuning import LISTENER_SETTINGS, Tuning, Usage, check_settings
from ._uring import ffi, lib
from ._uring_stream import UringStreamIO

#: submission and completion ring sizes (detection probes these same sizes)
RING_ENTRIES = 4096
RING_CQ_ENTRIES = 4 * RING_ENTRIES
#: completions copied out of the ring per call into the shim
REAP_BATCH = 1024
#: user_data of requests whose completions nobody waits for (cancel requests)
IGNORED = 0
#: largest single send handed to the kernel (the length field is 32 bits)
SEND_FLAGS = lib.MSG_NOSIGNAL | lib.MSG_WAITALL
F_MORE = lib.IORING_CQE_F_MORE


class Op:
    """One posted operation.  ``keep`` holds the memory the kernel may touch."""

    __slots__ = ("cancel_requested", "done", "drainers", "keep", "result", "task", "user_data")

    def __init__(self, user_data: int, keep: object) -> None:
        self.user_data = user_data
        self.keep = keep
        self.result = 0
        self.done = False
        self.cancel_requested = False
        self.task: Task | None = None
        self.drainers: list[Task] | None = None

    def complete(self, res: int, flags: int) -> None:
        self.result = res
        self.done = True
        self._wake()

    def _wake(self) -> None:
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)
        if self.drainers:
            for drainer in self.drainers:
                trio.lowlevel.reschedule(drainer)
            self.drainers = None


class SendOp(Op):
    """A send; its stream hears of the completion before the waiting task."""

    __slots__ = ("pipelined", "stream")

    def __init__(
        self, user_data: int, keep: object, stream: UringStreamIO, pipelined: bool
    ) -> None:
        super().__init__(user_data, keep)
        self.stream = stream
        self.pipelined = pipelined

    def complete(self, res: int, flags: int) -> None:
        self.result = res
        self.done = True
        self.stream.on_send_complete(self)
        self._wake()


class AcceptOp(Op):
    """One posted accept of a listener's pool: one connection, or an error."""

    __slots__ = ("listener",)

    def __init__(self, user_data: int, listener: UringListenerIO) -> None:
        super().__init__(user_data, None)
        self.listener = listener

    def complete(self, res: int, flags: int) -> None:
        self.result = res
        self.done = True
        self.listener.on_accept_completion(self, res)
        self._wake()


class UringEngine(Engine):
    def __init__(self, info: EngineInfo) -> None:
        self.info = info
        ring_pp = ffi.new("iou_ring **")
        rc = lib.iou_open(ring_pp, RING_ENTRIES, RING_CQ_ENTRIES, 0)
        if rc < 0:
            raise oserror(rc, "io_uring_setup")
        self._ring = ring_pp[0]
        self.fd = lib.iou_fd(self._ring)
        self._ops: dict[int, Op] = {}
        self._next_id = 1
        self._cqes = ffi.new("iou_cqe[]", REAP_BATCH)
        self._closed = False
        self._reaper_started = False
        self._listeners: weakref.WeakSet[UringListenerIO] = weakref.WeakSet()
        self._flush: list[UringStreamIO] = []

    # -- posting -------------------------------------------------------------

    def _post(self, prep: Callable[..., int], *args: Any) -> int:
        rc: int = prep(self._ring, *args)
        if rc == -errno.EBUSY:
            # The submission ring is full: hand it to the kernel now and retry.
            # This runs in a task, so completions may be reaped here if the
            # kernel asks for room first.
            if self._submit() < 0:
                self.after_io_wait()
                self._submit()
            rc = prep(self._ring, *args)
        if rc < 0:
            raise oserror(rc, "io_uring submission")
        return rc

    def _new_op(self, keep: object) -> Op:
        uid = self._next_id
        self._next_id = uid + 1
        op = Op(uid, keep)
        self._ops[uid] = op
        return op

    def _make_room(self, n: int) -> None:
        """A linked chain must reach the kernel in one submission."""
        if lib.iou_sq_space(self._ring) < n:
            self._submit()
            if lib.iou_sq_space(self._ring) < n:
                raise OSError(errno.EBUSY, f"io_uring submission queue too small for {n} entries")

    def post_recv_chain(self, fd: int, buffers: list[Any], size: int) -> list[Op]:
        """Receives into ``buffers``, linked so that the kernel runs them in order."""
        self._make_room(len(buffers))
        ring = self._ring
        ops = []
        last = len(buffers) - 1
        for i, buf in enumerate(buffers):
            op = self._new_op(buf)
            lib.iou_prep_recv(ring, fd, buf, size, 0, op.user_data)
            if i != last:
                lib.iou_set_last_flags(ring, lib.IOSQE_IO_LINK)
            ops.append(op)
        return ops

    def post_send_chain(
        self, fd: int, chunks: list[Any], stream: UringStreamIO, pipelined: bool
    ) -> list[SendOp]:
        """Sends of ``chunks``, linked so that their bytes leave in order."""
        self._make_room(len(chunks))
        ring = self._ring
        ops = []
        last = len(chunks) - 1
        for i, chunk in enumerate(chunks):
            ptr = ffi.from_buffer(chunk)
            uid = self._next_id
            self._next_id = uid + 1
            op = SendOp(uid, ptr, stream, pipelined)
            self._ops[uid] = op
            lib.iou_prep_send(ring, fd, ptr, len(ptr), SEND_FLAGS, uid)
            if i != last:
                lib.iou_set_last_flags(ring, lib.IOSQE_IO_LINK)
            ops.append(op)
        return ops

    def flush_later(self, stream: UringStreamIO) -> None:
        """Post ``stream``'s queued sends at the end of this scheduler pass."""
        self._flush.append(stream)

    def post_accept(self, listener: UringListenerIO) -> AcceptOp:
        uid = self._next_id
        self._next_id = uid + 1
        op = AcceptOp(uid, listener)
        self._ops[uid] = op
        self._post(lib.iou_prep_accept, listener.fd, 0, uid)
        return op

    def request_cancel(self, op: Op) -> None:
        if not op.done and not op.cancel_requested:
            op.cancel_requested = True
            self._post(lib.iou_prep_cancel, op.user_data, IGNORED)

    def _submit(self) -> int:
        """Enter the kernel once with everything prepared.  EAGAIN and EBUSY
        (short of memory, or completions waiting on the overflow list) leave
        the entries prepared for the next pass and are returned; other errors
        are raised."""
        rc: int = lib.iou_submit(self._ring, 0)
        if rc < 0 and rc not in (-errno.EAGAIN, -errno.EBUSY):
            raise oserror(rc, "io_uring_enter")
        return rc

    # -- scheduler hooks -----------------------------------------------------

    def before_io_wait(self) -> None:
        # Never reap here: Trio has chosen how long to sleep already.  If the
        # kernel refuses for now, the waiting completions make the ring
        # readable, so the loop wakes, reaps, and submits on the next pass.
        if self._flush:
            streams, self._flush = self._flush, []
            for stream in streams:
                stream.flush_sends()
        if lib.iou_unsubmitted(self._ring):
            self._submit()

    def after_io_wait(self) -> None:
        ops = self._ops
        cqes = self._cqes
        while True:
            n = lib.iou_reap(self._ring, cqes, REAP_BATCH)
            for i in range(n):
                cqe = cqes[i]
                uid = cqe.user_data
                if uid == IGNORED:
                    continue
                flags = cqe.flags
                op = ops[uid] if flags & F_MORE else ops.pop(uid)
                op.complete(cqe.res, flags)
            if n < REAP_BATCH:
                return

    def ensure_reaper(self) -> None:
        if not self._reaper_started:
            self._reaper_started = True
            trio.lowlevel.spawn_system_task(self._reaper, name="anyio_iocp io_uring reaper")

    async def _reaper(self) -> None:
        # Only here so that Trio's epoll wakes up for completions; the reaping
        # itself happens in after_io_wait, in the same scheduler pass.
        while True:
            await trio.lowlevel.wait_readable(self.fd)
            self.after_io_wait()

    # -- waiting -------------------------------------------------------------

    async def wait(self, op: Op) -> None:
        """Wait for ``op``; if cancelled, ``op`` stays posted (receive, accept)."""
        op.task = trio.lowlevel.current_task()

        def abort(_: Callable[[], object]) -> Abort:
            op.task = None
            return Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def wait_or_cancel(self, op: Op) -> None:
        """Wait for ``op``; if cancelled, cancel it in the kernel and wait for the
        completion, then raise Cancelled only if the operation did not happen."""
        task = trio.lowlevel.current_task()
        op.task = task
        raise_cancel: list[Callable[[], object]] = []

        def abort(rc: Callable[[], object]) -> Abort:
            raise_cancel.append(rc)
            self.request_cancel(op)
            return Abort.FAILED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if raise_cancel and op.result in (-errno.ECANCELED, -errno.EINTR):
            raise_cancel[0]()

    async def drain(self, ops: list[Op]) -> None:
        """Cancel ``ops`` and wait for all their completions, shielded."""
        for op in ops:
            self.request_cancel(op)
        task = trio.lowlevel.current_task()
        for op in ops:
            while not op.done:
                if op.drainers is None:
                    op.drainers = []
                op.drainers.append(task)
                await trio.lowlevel.wait_task_rescheduled(lambda _: Abort.FAILED)

    # -- Engine interface ----------------------------------------------------

    def open_stream(self, sock: socket.socket, tuning: Tuning) -> StreamIO:
        self.ensure_reaper()
        return UringStreamIO(self, sock, tuning)

    def open_listener(self, sock: socket.socket, tuning: Tuning) -> ListenerIO:
        self.ensure_reaper()
        listener = UringListenerIO(self, sock, tuning)
        self._listeners.add(listener)
        return listener

    async def connect(self, sock: socket.socket, address: tuple[Any, ...]) -> None:
        self.ensure_reaper()
        sockaddr = ffi.from_buffer(pack_sockaddr(sock.family, address))
        op = self._new_op(sockaddr)
        self._post(lib.iou_prep_connect, sock.fileno(), sockaddr, len(sockaddr), op.user_data)
        await self.wait_or_cancel(op)
        if op.result < 0:
            raise oserror(op.result, f"connect to {address!r}")

    def close(self) -> None:
        """End of the run: cancel and drain everything, then release the ring."""
        if self._closed:
            return
        self._closed = True
        for op in list(self._ops.values()):
            # No task is left to wake: every task of the run has finished.
            op.task = None
            op.drainers = None
            self.request_cancel(op)
        for listener in list(self._listeners):
            # also those whose accept was already stopped by a full queue
            listener.discard_queued()
        while self._ops:
            rc = lib.iou_submit(self._ring, 1)
            if rc < 0 and rc != -errno.EINTR:
                break
            self.after_io_wait()
        lib.iou_close(self._ring)


def pack_sockaddr(family: int, address: tuple[Any, ...]) -> bytes:
    """``struct sockaddr_in`` / ``sockaddr_in6`` for a numeric address tuple."""
    host, port = address[0], address[1]
    if family == socket.AF_INET:
        return struct.pack("=H", family) + struct.pack(
            "!H4s8x", port, socket.inet_pton(family, host)
        )
    if family == socket.AF_INET6:
        flowinfo = address[2] if len(address) > 2 else 0
        scope_id = address[3] if len(address) > 3 else 0
        if "%" in host:
            host, _, scope = host.partition("%")
            scope_id = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
        return (
            struct.pack("=H", family)
            + struct.pack("!HI16s", port, flowinfo, socket.inet_pton(family, host))
            + struct.pack("=I", scope_id)
        )
    raise ValueError(f"unsupported address family {family!r}: expected AF_INET or AF_INET6")


class UringListenerIO(ListenerIO):
    """A pool of ``backlog`` posted accepts, iocpsock's ``-backlog``.

    Each accept is single-shot.  Connections accepted before the application
    asks for them wait in a queue.  Queued connections plus posted accepts
    never exceed ``backlog``, and ``accept()`` refills the pool as it takes
    from the queue.  (A multishot accept takes every pending connection as
    soon as it is armed, so it could not keep this bound.)  After an accept
    error (EMFILE, say) the pool is refilled only by the next ``accept()``,
    which first raises the error: a full descriptor table does not spin.
    """

    def __init__(self, engine: UringEngine, sock: socket.socket, tuning: Tuning) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.tuning = tuning
        self._engine = engine
        self._family = sock.family
        self._queue: deque[int] = deque()
        self._posted: set[AcceptOp] = set()
        self._error: OSError | None = None
        self._waiter: Task | None = None
        self._closing = False
        # The pool is posted at once, as iocpsock posted its AcceptEx calls.
        self._refill()

    def on_accept_completion(self, op: AcceptOp, res: int) -> None:
        self._posted.discard(op)
        if res >= 0:
            if self._closing:
                os.close(res)
                return
            self._queue.append(res)
        elif res != -errno.ECANCELED and self._error is None:
            self._error = oserror(res, "accept")
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def _refill(self) -> None:
        if self._closing or self._error is not None:
            return
        while len(self._queue) + len(self._posted) < self.tuning.backlog:
            self._posted.add(self._engine.post_accept(self))

    async def accept(self) -> socket.socket:
        if self._queue or self._error is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
            await trio.lowlevel.cancel_shielded_checkpoint()
        while not self._queue and self._error is None:
            if self._closing:
                raise OSError(errno.EBADF, "listener closed")
            self._refill()
            self._waiter = trio.lowlevel.current_task()

            def abort(_: Callable[[], object]) -> Abort:
                self._waiter = None
                return Abort.SUCCEEDED

            await trio.lowlevel.wait_task_rescheduled(abort)
        if self._queue:
            fd = self._queue.popleft()
            self._refill()
            return socket.socket(self._family, socket.SOCK_STREAM, 0, fileno=fd)
        error, self._error = self._error, None
        assert error is not None
        raise error

    def usage(self, name: str) -> Usage:
        if name == "backlog":
            return Usage(self.tuning.backlog, len(self._queue))
        return Usage(getattr(self.tuning, name), 0)

    def configure(self, **settings: int) -> None:
        checked = check_settings(settings, LISTENER_SETTINGS, "a listener")
        self.tuning = replace(self.tuning, **checked)
        excess = len(self._queue) + len(self._posted) - self.tuning.backlog
        for op in list(self._posted)[: max(excess, 0)]:
            self._engine.request_cancel(op)  # a smaller pool: withdraw accepts
        self._refill()

    def discard_queued(self) -> None:
        """Close connections accepted by the kernel but never taken."""
        self._closing = True
        while self._queue:
            os.close(self._queue.popleft())

    async def close(self) -> None:
        self.discard_queued()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)
        if self._posted:
            with trio.CancelScope(shield=True):
                await self._engine.drain(list(self._posted))
        self.sock.close()
