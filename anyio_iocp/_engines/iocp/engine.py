"""The IOCP engine: overlapped Winsock I/O on Trio's own completion port.

The model
---------
Windows reports *completions*, as io_uring does: an operation (``AcceptEx``,
``WSARecv``, ``WSASend``, and for UDP ``WSARecvFrom`` and ``WSASendTo`` in
:mod:`anyio_iocp._engines.iocp.messages`) is posted with an ``OVERLAPPED``
structure before the event happens, and when the kernel has done it, a
completion packet naming that ``OVERLAPPED`` is queued on the completion port
the socket is associated with.  The program never asks "is this socket
ready?".

One port, no thread
-------------------
Trio on Windows already sleeps in ``GetQueuedCompletionStatusEx`` on a port
of its own.  This engine uses that same port
(``trio.lowlevel.current_iocp()``) and no thread of its own:

* ``trio.lowlevel.monitor_completion_key()`` gives the engine a completion key
  and a queue.  Every socket the engine posts operations on is associated
  with Trio's port under that key (``CreateIoCompletionPort(socket, port, key, 0)``), so Trio
  hands every packet of those sockets to the queue, in the scheduler pass in
  which it arrived.
* Right after Trio's I/O wait (the instrument hook
  :meth:`IocpEngine.after_io_wait`) the engine takes the packets from the
  queue and completes the operations they name: the ``OVERLAPPED`` address (an
  integer) maps to the :class:`IocpOp` in the engine's table.  Their tasks are
  rescheduled in the same scheduler pass.  A system task also waits on the
  queue; it is what makes the run end cleanly (below), and it catches any
  packet the hook has not taken.

Trio's simpler ``register_with_iocp`` + ``wait_overlapped`` pair is not used:
it requires a waiter to be registered before the next checkpoint after each
post, and a packet that arrives with no waiter ends the whole run.  The pools
this engine keeps posted ahead (accepts, receives, write-behind sends) have no
waiting task most of the time, so they need their own key.

The traps, and what this module does about them
-----------------------------------------------
* A packet for a key nobody monitors any more also ends the run
  (``TrioInternalError``).  The key is therefore held for the whole run, and
  at the end of it (the system task is cancelled once every other task has
  finished) every operation still posted is cancelled with ``CancelIoEx`` and
  its packet drained *before* the key's monitor ends.  The wait is bounded
  (``RUN_END_DRAIN_SECONDS``); operations still pending after it are abandoned,
  the key stays monitored and their memory is kept alive.
* Memory lent to the kernel (``OVERLAPPED``, ``WSABUF``, buffers, the address
  space of an accept) must outlive the operation.  Each :class:`IocpOp` holds
  it, and the engine's table holds the op until its packet has arrived,
  whatever happens to the task that posted it.
* Cancelling the waiting task does not cancel the operation.  A receive or an
  accept stays posted, and its result goes to the next ``receive()`` or
  ``accept()``.  A send is cancelled with ``CancelIoEx`` and the task waits
  for the packet before Cancelled propagates: the packet tells whether the
  operation happened after all (then its result is used).
* ``CancelIoEx`` says ``ERROR_NOT_FOUND`` when the operation has already
  completed: its packet is on its way, and nothing more is done.
* Packets are produced for synchronous successes too (the engine never sets
  ``FILE_SKIP_COMPLETION_PORT_ON_SUCCESS``), so there is exactly one place
  where an operation ends.  An immediate failure other than ``WSA_IO_PENDING``
  produces no packet: the op, entered in the table before the call (as
  everything that can fail is: :meth:`IocpEngine.enter`), is taken out again.
* A socket can be associated with one port only, once.  The engine remembers
  which sockets it has associated.  A listener's and a UDP socket's are
  associated when they open; a stream's just before its first posted
  operation (:mod:`anyio_iocp._engines.iocp.stream`): a short connection
  served by direct calls alone is never associated, which spares two requests
  to the kernel per connection.
* Connects are not posted: a non-blocking ``connect()`` is over when it
  returns on loopback, so the engine calls it directly and waits (Trio's AFD
  poll) only for a handshake still under way, as the other engines do
  (:mod:`anyio_iocp._interface.connecting`).  The socket is associated when
  its stream first posts an operation.
"""

from __future__ import annotations

import errno
import logging
import socket
import warnings
import weakref
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio
from trio.lowlevel import enable_ki_protection

from anyio_iocp._engines.iocp.stream import IocpStreamIO
from anyio_iocp._engines.iocp.winsock import (
    ffi,
    handle_of,
    kernel32,
    last_error,
    winerror,
    ws2,
)
from anyio_iocp._flow.look_after_send import LooksAfterSends
from anyio_iocp._interface import trace as _trace
from anyio_iocp._interface.budget import ScheduleBudget
from anyio_iocp._interface.completion import CompletionOp, CompletionWaits
from anyio_iocp._interface.connecting import connect_stream
from anyio_iocp._interface.engine import Engine, EngineInfo, ListenerIO, MessageIO, StreamIO
from anyio_iocp._interface.settings import Tuning
from anyio_iocp._interface.stats import EngineCounters
from anyio_iocp._internals import trio_iocp

if TYPE_CHECKING:
    from anyio_iocp._engines.iocp.listener import IocpListenerIO

_log = logging.getLogger("anyio_iocp")

#: how long the end of a run waits for the last completion packets (streams
#: wait for their write-behind sends at close: send_chain.CLOSE_DRAIN_SECONDS)
RUN_END_DRAIN_SECONDS = 5.0

#: receive buffers need no zeroing: only the bytes the kernel wrote are read
_new_buffer = ffi.new_allocator(should_clear_after_alloc=False)

ERROR_OPERATION_ABORTED: int = ws2.ERROR_OPERATION_ABORTED
STATUS_CANCELLED: int = ws2.STATUS_CANCELLED


class IocpOp(CompletionOp):
    """One posted operation.  ``keep`` holds the memory the kernel may touch."""

    __slots__ = (
        "address",
        "error",
        "on_complete",
        "overlapped",
        "sock",
        "transferred",
    )

    kind: str

    def __init__(self, sock: socket.socket, keep: object = None) -> None:
        # the fields of CompletionOp are set here: one call per posted op
        self.sock = sock
        self.overlapped = ffi.new("OVERLAPPED *")
        self.address = int(ffi.cast("uintptr_t", self.overlapped))
        self.keep = keep
        #: what it is, for the statistics ("recv", "send", "accept", ...)
        self.kind = ""
        self.done = False
        #: Winsock error code, 0 on success
        self.error = 0
        self.transferred = 0
        self.task = None
        self.drainers = None
        #: called first when the packet arrives (streams and listeners)
        self.on_complete: Callable[[IocpOp], None] | None = None

    @property
    def cancelled(self) -> bool:
        return self.error == ERROR_OPERATION_ABORTED

    def complete(self, transferred: int) -> None:
        overlapped = self.overlapped
        status = overlapped.Internal
        if status == 0:
            self.transferred = transferred
        elif status == STATUS_CANCELLED:
            self.error = ERROR_OPERATION_ABORTED
            self.transferred = transferred
        else:
            count = ffi.new("DWORD *")
            flags = ffi.new("DWORD *")
            if ws2.WSAGetOverlappedResult(self.sock.fileno(), overlapped, count, 0, flags):
                self.transferred = count[0]  # pragma: no cover (status says it failed)
            else:
                self.error = last_error() or ERROR_OPERATION_ABORTED
                self.transferred = count[0]
        self.done = True
        callback = self.on_complete
        if callback is not None:
            try:
                callback(self)
            except Exception:  # the dispatcher must survive a failing handler
                _log.exception("completion handler failed")
        self.wake()

    def oserror(self, what: str) -> OSError:
        return winerror(self.error, what)


#: the Winsock call of a posted operation -> its kind in the statistics
_KINDS = {
    "WSARecv": "recv",
    "WSASend": "send",
    "AcceptEx": "accept",
    "WSARecvFrom": "recvmsg",
    "WSASendTo": "sendmsg",
}


class IocpEngine(Engine, CompletionWaits[IocpOp]):
    def __init__(self, info: EngineInfo) -> None:
        self.info = info
        self.counters = EngineCounters()
        self.budget = ScheduleBudget()
        #: what looks right after a send found (look_after_send)
        self.looks = LooksAfterSends()
        self._port = ffi.cast("HANDLE", trio_iocp.current_iocp())
        # Entered here (synchronously: sockets need the key at once) and left
        # by the dispatcher task once every operation has been drained.
        self._monitor = trio_iocp.monitor_completion_key()
        with warnings.catch_warnings():
            # the queue Trio hands out is its own deprecated UnboundedQueue
            warnings.simplefilter("ignore", trio.TrioDeprecationWarning)
            self._key, self._queue = self._monitor.__enter__()
        self._ops: dict[int, IocpOp] = {}
        self._associated: weakref.WeakValueDictionary[int, socket.socket] = (
            weakref.WeakValueDictionary()
        )
        # strong references: a listener dropped without aclose() must still
        # have its accepted connections closed at the end of the run
        self._listeners: set[IocpListenerIO] = set()
        self.closed = False
        trio.lowlevel.spawn_system_task(self._dispatcher, name="anyio_iocp completion dispatcher")
        if _trace.active:
            _trace.emit(
                "engine.setup",
                f"IOCP: Trio's completion port, completion key {self._key}",
                port=int(ffi.cast("uintptr_t", self._port)),
                key=self._key,
            )

    # -- association and posting ----------------------------------------------

    def check_open(self) -> None:
        if self.closed:
            raise OSError(
                errno.EBADF,
                "the run that created this socket has ended: its completion port is gone",
            )

    def associate(self, sock: socket.socket) -> None:
        """Associate ``sock`` with Trio's port under the engine's key (once)."""
        self.check_open()
        fd = sock.fileno()
        if self._associated.get(fd) is sock:
            return
        port = kernel32.CreateIoCompletionPort(handle_of(sock), self._port, self._key, 0)
        if port == ffi.NULL:
            raise winerror(last_error(), "CreateIoCompletionPort")
        # Nobody waits on the socket handle itself: the kernel need not signal
        # it.  (Not FILE_SKIP_COMPLETION_PORT_ON_SUCCESS: every op gets its packet.)
        kernel32.SetFileCompletionNotificationModes(
            handle_of(sock), ws2.FILE_SKIP_SET_EVENT_ON_HANDLE
        )
        self._associated[fd] = sock

    def forget(self, sock: socket.socket) -> None:
        """``sock`` is about to be closed: its handle number may be reused."""
        fd = sock.fileno()
        if fd != -1 and self._associated.get(fd) is sock:
            del self._associated[fd]

    def enter(self, op: IocpOp, what: str, fd: int) -> None:
        """Enter ``op`` in the table and count it, just *before* its call on
        socket ``fd``.

        Once a call has queued a packet, its owner must still know of the
        operation: one the table did not hold would have its memory freed
        while the kernel still writes into it, and one its stream did not
        list would bring bytes to nobody.  So the count, this entry and the
        owner's list come before the call, and a call that fails at once
        takes the entry out again (:meth:`posted`).  An owner undoes its
        list only while :meth:`holds` says no: what fails after a call that
        queued a packet leaves the operation where it is.
        """
        if fd < 0:  # (closed under the stream: cffi would refuse it after the entry)
            raise OSError(errno.EBADF, f"{what}: the socket is closed")
        kind = op.kind = _KINDS.get(what.partition(" ")[0], "other")
        self.counters.count_posted(kind)
        try:
            self._ops[op.address] = op
        except BaseException:
            self.counters.uncount_posted(kind)
            raise

    def posted(self, op: IocpOp, ok: bool, what: str) -> IocpOp:
        """After the call of an operation :meth:`enter` entered: ``op``, or raise.

        ``ok`` false with ``WSA_IO_PENDING`` is the usual case; a success also
        queues a packet.  Any other failure queues none: the entry is taken
        out again before the error is raised.
        """
        if not ok:
            code = last_error()
            if code != ws2.WSA_IO_PENDING:
                del self._ops[op.address]
                self.counters.uncount_posted(op.kind)
                raise winerror(code, what)
        return op

    def holds(self, op: IocpOp) -> bool:
        """Whether ``op`` is entered: its packet is to come, or its call is
        still to be made (an owner that failed on the way keeps it listed)."""
        return self._ops.get(op.address) is op

    def in_flight(self) -> dict[str, int]:
        return dict(Counter(op.kind for op in self._ops.values()))

    def new_recv(self, sock: socket.socket, size: int) -> IocpOp:
        """A receive of ``size`` bytes, made but not posted: its owner lists
        it before :meth:`start_recv` posts it (:meth:`enter`)."""
        self.check_open()
        buf = _new_buffer("char[]", size)
        return IocpOp(sock, (buf, ffi.new("WSABUF *", (size, buf)), ffi.new("DWORD *", 0)))

    def start_recv(self, op: IocpOp) -> None:
        """Post a receive :meth:`new_recv` made (``WSARecv``)."""
        keep: Any = op.keep
        _buf, wsabuf, flags = keep
        fd = op.sock.fileno()
        self.enter(op, "WSARecv", fd)
        rc = ws2.WSARecv(fd, wsabuf, 1, ffi.NULL, flags, op.overlapped, ffi.NULL)
        self.posted(op, rc == 0, "WSARecv")

    def new_send(self, sock: socket.socket, data: bytes | memoryview) -> IocpOp:
        """A send of ``data``, made but not posted (:meth:`start_send`)."""
        self.check_open()
        cdata = ffi.from_buffer(data)
        wsabuf = ffi.new("WSABUF *", (len(cdata), ffi.cast("char *", cdata)))
        return IocpOp(sock, (data, cdata, wsabuf))

    def start_send(self, op: IocpOp) -> None:
        """Post a send :meth:`new_send` made (``WSASend``)."""
        keep: Any = op.keep
        wsabuf = keep[2]
        fd = op.sock.fileno()
        self.enter(op, "WSASend", fd)
        rc = ws2.WSASend(fd, wsabuf, 1, ffi.NULL, 0, op.overlapped, ffi.NULL)
        self.posted(op, rc == 0, "WSASend")

    def request_cancel(self, op: IocpOp) -> None:
        """Ask the kernel to cancel ``op``; its packet arrives either way."""
        if op.done or self.closed:
            return
        if not kernel32.CancelIoEx(handle_of(op.sock), op.overlapped):
            # ERROR_NOT_FOUND: it has completed and its packet is on its way
            pass

    # -- completions ----------------------------------------------------------

    def _complete(self, batch: list[Any]) -> None:
        counters = self.counters
        counters.completions += len(batch)
        counters.reaps += 1
        ops = self._ops
        for info in batch:
            op = ops.pop(info.lpOverlapped, None)
            if op is None:  # pragma: no cover (every packet of our key is ours)
                _log.error("completion packet for an unknown OVERLAPPED %#x", info.lpOverlapped)
                continue
            op.complete(info.dwNumberOfBytesTransferred)

    def after_io_wait(self) -> None:
        """Complete the packets Trio has just queued, in the same pass."""
        self.counters.passes += 1
        self.budget.new_pass()
        try:
            batch = self._queue.get_batch_nowait()
        except trio.WouldBlock:
            return
        self._complete(batch)

    async def _dispatcher(self) -> None:
        """Completes operations as their packets arrive; at the end of the run
        cancels and drains everything before the key's monitor ends."""
        queue = self._queue
        try:
            while True:
                self._complete(await queue.get_batch())
        finally:
            with trio.CancelScope(shield=True):
                await self._drain_all(queue)

    async def _drain_all(self, queue: Any) -> None:
        self._closing_listeners()
        if self._ops and _trace.active:
            _trace.operations_left("IOCP", self.in_flight())
        # no task waits for an op any more, but a system task may be draining
        # one (closing a stream the program dropped): it is woken as usual
        self.cancel_at_end(list(self._ops.values()), in_run=True)
        with trio.move_on_after(RUN_END_DRAIN_SECONDS):
            while self._ops:
                self._complete(await queue.get_batch())
                self._closing_listeners()
        self.closed = True
        self.release_drainers(self._ops.values())  # their drain gives up now
        kept = "their memory is kept alive and the completion key stays monitored"
        if self.keep_uncompleted(self._ops.values(), "overlapped operations", kept):
            return
        self._monitor.__exit__(None, None, None)

    def _closing_listeners(self) -> None:
        for listener in list(self._listeners):
            listener.discard_queued()

    # -- Engine interface -----------------------------------------------------

    def open_stream(self, sock: socket.socket, tuning: Tuning) -> StreamIO:
        # (associated with the port before its first posted operation)
        self.check_open()
        self.counters.streams += 1
        return IocpStreamIO(self, sock, tuning)

    @enable_ki_protection  # (Ctrl+C waits: a listener handed out, or none posting)
    def open_listener(self, sock: socket.socket, tuning: Tuning) -> ListenerIO:
        self.associate(sock)
        self.counters.listeners += 1
        from anyio_iocp._engines.iocp.listener import (
            IocpListenerIO,  # it imports this module's IocpOp
        )

        try:
            listener = IocpListenerIO(self, sock, tuning)
        except BaseException:
            self.forget(sock)  # (the caller closes it: its handle may be reused)
            raise
        try:
            self._listeners.add(listener)
        except BaseException:
            listener.let_go()  # (withdraws its accepts, and forgets the socket)
            raise
        return listener

    def open_messages(self, sock: socket.socket) -> MessageIO:
        """UDP goes through the port; anything else (no other kind reaches a
        Windows engine today) keeps the readiness default."""
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_DGRAM:
            return super().open_messages(sock)
        from anyio_iocp._engines.iocp.messages import (
            IocpMessageIO,
        )  # it imports this module's IocpOp

        self.associate(sock)
        return IocpMessageIO(self, sock)

    def forget_listener(self, listener: IocpListenerIO) -> None:
        self._listeners.discard(listener)

    async def connect(self, sock: socket.socket, address: tuple[Any, ...]) -> None:
        # A direct non-blocking connect(), as on the other engines
        # (anyio_iocp._interface.connecting): on loopback the handshake is over
        # when it returns (under Wine too: 100 of 100), which a posted ConnectEx
        # would learn only from a packet one pass later.  A handshake still
        # under way is waited for with Trio's AFD poll; the socket is
        # associated with the port when its stream first posts an operation.
        self.check_open()
        await connect_stream(sock, address, self.budget, self.counters, self._wait_connect)

    async def _wait_connect(self, sock: socket.socket) -> None:
        self.counters.waits += 1
        await trio.lowlevel.wait_writable(sock)
