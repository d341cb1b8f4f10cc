"""One connected stream on the IOCP engine: the primitives of the shared
receive pool and send chain.

The policy is written once in the flow package: receiving ahead with
Automatic Burst Detection in :mod:`anyio_iocp._flow.receive_pool`, sending
(direct, waited for, or write-behind within ``sendcap``) and closing in
:mod:`anyio_iocp._flow.send_chain`.  What is Windows' here:

* Receives: Windows fills the overlapped receives of a stream socket in the
  order they were posted, so the ``k`` receives of a pool are ``k`` plain
  ``WSARecv`` calls, each with its own buffer; their bytes come back in order
  without the linking io_uring needs.  A cancelled ``receive()`` leaves them
  posted, and nothing is cancelled in the kernel.
* Sends: Windows also sends the data of overlapped sends on one socket in the
  order they were posted, so a write-behind send is posted at once
  (``WSASend``), up to ``sendcap`` of them in flight.  A waited-for send that
  is cancelled is cancelled with ``CancelIoEx``, and its packet awaited.
* Every operation's packet arrives, also after a cancel: ``close()`` cancels
  what is left and waits for every packet before the socket is closed.
* The socket is associated with the completion port only before its first
  overlapped operation.  A stream served by direct calls alone (a short
  connection whose bytes are there when it looks) never is: association is
  two requests to the kernel (under Wine, two round trips to the
  wineserver), and nothing needs it until an operation is posted.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from trio.lowlevel import enable_ki_protection

from anyio_iocp._engines.iocp.winsock import ffi, ws2
from anyio_iocp._flow.receive_pool import ReceivePool
from anyio_iocp._flow.send_chain import MAX_SEND, SEND_CANCELLED, SendChain
from anyio_iocp._interface.engine import set_nonblocking
from anyio_iocp._interface.settings import Tuning

if TYPE_CHECKING:
    from anyio_iocp._engines.iocp.engine import IocpEngine, IocpOp


class IocpStreamIO(ReceivePool, SendChain):
    _engine: IocpEngine
    #: a new stream waits at once, without a look first (yield_first): a
    #: recv that finds nothing costs a round trip to the wineserver under Wine
    #: (30-180 us), and in the demo's hello phase (client and server in one
    #: process) the look found nothing: 5.0 recv calls per exchange with it,
    #: 3.0 without (cProfile; docs/performance.md, sixth pass).  A look that
    #: finds bytes still earns credit later.
    start_credit = 0
    #: a direct look during a burst reads four buffers in one call (the
    #: receive pool's burst_read_buffers): under Wine a call is three requests
    #: to the wineserver, whatever its size; in throw-away runs that read a
    #: fixed size after every full read, bulk went from 234 and 334 MB/s to
    #: 722 and 725 with four (654 and 722 with sixteen; docs/performance.md,
    #: twenty-first pass).  (TCP only: the engine runs no UNIX streams, whose
    #: descriptors a read ahead would drop.)
    burst_read_buffers = 4

    def __init__(self, engine: IocpEngine, sock: socket.socket, tuning: Tuning) -> None:
        # for the direct calls (overlapped calls ignore it); a connected client
        # socket is non-blocking already (connect_stream), so no call is made
        set_nonblocking(sock)
        self._init_flow(sock, tuning, engine.counters)
        self._engine = engine
        #: associated with the completion port (before the first posted operation)
        self._on_port = False
        self._init_receive_pool()
        # sends in flight are in _sending (oldest first), the write-behind
        # ones also here; they are posted at once (_queued stays empty)
        self._pipelined: set[IocpOp] = set()
        self._init_send_chain()

    def _to_port(self) -> None:
        """Associate the socket with the port: its first operation is about to
        be posted (module docstring)."""
        self._engine.associate(self.sock)
        self._on_port = True

    # -- receiving: the pool's primitives -------------------------------------

    def _post_receives(self, count: int) -> None:
        """``count`` WSARecv calls: the first must be posted, the rest are best effort."""
        if not self._on_port:
            self._to_port()
        self._post_receive()
        for _ in range(count - 1):
            try:
                self._post_receive()
            except (OSError, MemoryError):
                break

    @enable_ki_protection  # (Ctrl+C waits: posted and listed, or neither)
    def _post_receive(self) -> None:
        # listed before the call (IocpEngine.enter), unlisted only if not posted
        engine, posted = self._engine, self._posted
        op = engine.new_recv(self.sock, self.buffersize)
        posted.append(op)
        try:
            engine.start_recv(op)
        except BaseException:
            if not engine.holds(op):
                posted.remove(op)
            raise

    def _receive_outcome(self, op: IocpOp) -> bytes | OSError | None:
        if op.error:
            return None if op.cancelled else op.oserror("WSARecv")
        n = op.transferred
        return ffi.buffer(op.keep[0], n)[:] if n else b""  # type: ignore[index]

    def _receive_cancelled(self) -> OSError:
        return OSError(None, "receive cancelled", None, ws2.ERROR_OPERATION_ABORTED)

    # -- sending: the chain's primitives --------------------------------------

    @enable_ki_protection  # (Ctrl+C waits: posted and listed, or neither)
    def _post_send(self, data: memoryview, write_behind: bool = False) -> IocpOp:
        if not self._on_port:
            self._to_port()
        # listed before the call (IocpEngine.enter), unlisted only if not posted:
        # a send that fails before its call has sent nothing
        engine, sending = self._engine, self._sending
        op = engine.new_send(self.sock, data)
        op.on_complete = self.on_send_complete
        sending.append(op)
        try:
            if write_behind:
                self._pipelined.add(op)
            engine.start_send(op)
        except BaseException:
            if not engine.holds(op):
                sending.remove(op)
                self._pipelined.discard(op)
            raise
        return op

    def _sent(self, op: IocpOp) -> int:
        if op.error:
            raise op.oserror("WSASend")
        return op.transferred

    def _hand_over(self, data: bytes | memoryview) -> None:
        """Windows sends the data of overlapped sends on one socket in the
        order they were posted: post at once."""
        owned = data if isinstance(data, memoryview) else memoryview(data)
        try:
            while owned:
                self._post_send(owned[:MAX_SEND], write_behind=True)
                owned = owned[MAX_SEND:]
        except OSError as exc:
            # Bytes cannot be skipped on a stream: it is broken from now on.
            self._send_error = exc
            self._send_error_reported = True
            raise

    def _was_write_behind(self, op: IocpOp) -> bool:
        if op in self._pipelined:
            self._pipelined.discard(op)
            return True
        return False

    def _send_failure(self, op: IocpOp) -> OSError | None:
        if op.error:
            # cancelled: by close(), which cut write-behind sends off on purpose
            return SEND_CANCELLED if op.cancelled else op.oserror("WSASend")
        if op.transferred < len(op.keep[0]):  # type: ignore[index]
            return OSError(None, "short send", None, ws2.WSAECONNRESET)
        return None

    def _send_result(self, op: IocpOp) -> int:
        return -op.error if op.error else op.transferred

    def _write_behind_pending(self) -> int:
        return len(self._pipelined)

    # -- closing --------------------------------------------------------------

    def _operations(self) -> list[Any]:
        return [*self._posted, *self._sending]

    def _release(self) -> None:
        self._posted.clear()
        self._sending.clear()
        self._pipelined.clear()
        self._engine.forget(self.sock)
