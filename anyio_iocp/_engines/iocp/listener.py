"""The IOCP engine's listener: the accept pool's primitives as ``AcceptEx`` calls.

The policy (pool of ``backlog`` posted accepts, queue, back-off when
descriptors run out, close) is :class:`anyio_iocp._flow.accept_pool.PostedAcceptPool`.
This module posts the accepts and reads their packets.

Each posted ``AcceptEx`` owns a fresh socket that becomes the connection (it
needs ``SO_UPDATE_ACCEPT_CONTEXT`` before ``getpeername`` and ``shutdown``
work on it).  What a packet's Winsock error means for the listener:

* ``WSAEMFILE`` (no socket handle left) and ``WSAENOBUFS`` (no buffer space,
  the kernel is short of memory) are a shortage, as EMFILE and ENOBUFS are on
  Linux: accepting pauses with back-off (:mod:`anyio_iocp._flow.accept_backoff`).
  The same codes raised while posting, where creating the accept's socket
  fails first, are the same shortage;
* a connection reset before ``AcceptEx`` took it (``ERROR_NETNAME_DELETED``
  and the like) is no error of the listener: the pool refills as its policy
  says;
* ``ERROR_OPERATION_ABORTED``: the accept was withdrawn or drained;
* a pool that runs the process out of descriptors while posting gives half
  of its accepts back (:mod:`anyio_iocp._flow.accept_pool`): each is
  cancelled and its socket closed at once, so the descriptors are free before
  the packets come;
* anything else is raised by the next ``accept()``.

A busy listener accepts directly (``_accept_now``): a non-blocking
``accept()`` on the listening socket, which Winsock allows beside pending
``AcceptEx`` calls, takes a connection already waiting in the listen queue.
The pool's policy decides when (``anyio_iocp._flow.accept_pool``): while
connections keep coming and no ``AcceptEx`` is pending
(``direct_while_posted``), and the pool is posted again when the listener is
idle; a busy listener that catches up posts one ``AcceptEx`` instead
(``busy_wakeup_accepts``).  Under Wine every Winsock call is one to three
requests to the wineserver, and a connection through the pool costs about
three more than a direct one (``bench/wine_requests.py``): the accept's own
``socket()``, ``AcceptEx``, its completion packet,
``SO_UPDATE_ACCEPT_CONTEXT`` and the stream's ``setblocking``, against
``accept()`` and what CPython adds to it (the handle made non-inheritable,
and the ``getsockname`` with which ``socket(fileno=...)`` checks the
descriptor).  The directly accepted socket inherits the listening socket's
properties and needs no ``SO_UPDATE_ACCEPT_CONTEXT``; its non-blocking mode
among them, so it needs no ``setblocking`` either where a probe saw that
(:mod:`anyio_iocp._engines.iocp.inherited`).  WSAEMFILE and WSAENOBUFS from
the direct call are the shortage above; any other error (none waiting, a
connection reset before it was taken) leaves the posted accepts to report.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from typing import TYPE_CHECKING, Any, cast

from trio.lowlevel import enable_ki_protection

from anyio_iocp._engines.iocp.engine import IocpOp
from anyio_iocp._engines.iocp.inherited import InheritedNonblocking, inherits_nonblocking
from anyio_iocp._engines.iocp.winsock import (
    ACCEPT_ADDRESS_SPACE,
    extensions,
    ffi,
    last_error,
    winerror,
    ws2,
)
from anyio_iocp._flow.accept_pool import PostedAcceptPool
from anyio_iocp._interface.settings import Tuning
from anyio_iocp._internals.cpython_socket import accept_descriptor

if TYPE_CHECKING:
    from anyio_iocp._engines.iocp.engine import IocpEngine

#: Winsock errors of an accept that mean "no socket or memory for a new
#: connection right now" -> the errno the back-off knows them by
WSAEMFILE = 10024
WSAENOBUFS = 10055
ACCEPT_EXHAUSTION = {WSAEMFILE: errno.EMFILE, WSAENOBUFS: errno.ENOBUFS}
#: a connection reset before AcceptEx took it: not the listener's error
#: (WSAEWOULDBLOCK and ERROR_NOT_READY: under Wine, a direct accept took the
#: connection first; not expected, since no direct accept runs while an
#: AcceptEx is pending (direct_while_posted), but such a race must not end serve())
ERROR_NOT_READY = 21
ACCEPT_RETRY_ERRORS = frozenset(
    (
        ws2.ERROR_NETNAME_DELETED,
        ws2.WSAECONNRESET,
        ws2.ERROR_CONNECTION_ABORTED,
        ws2.WSAEWOULDBLOCK,
        ERROR_NOT_READY,
    )
)


class IocpListenerIO(PostedAcceptPool[IocpOp]):
    """A pool of ``backlog`` posted ``AcceptEx`` calls, iocpsock's ``-backlog``."""

    accepts_hold_descriptors = True  # each AcceptEx owns its connection's socket
    #: no direct accept while AcceptEx calls are pending: under Wine it could
    #: take the connection one of them was being completed with
    direct_while_posted = False
    #: so a busy listener that catches up posts one accept, not the pool
    busy_wakeup_accepts = 1

    def __init__(self, engine: IocpEngine, sock: socket.socket, tuning: Tuning) -> None:
        sock.setblocking(False)
        self._engine = engine
        self._listen_handle = ffi.new("SOCKET *", sock.fileno())
        #: the class of directly accepted sockets: InheritedNonblocking where
        #: they are non-blocking already (probed once per process)
        self._accepted_class = InheritedNonblocking if inherits_nonblocking() else socket.socket
        super().__init__(sock, tuning, engine.counters)

    @enable_ki_protection  # (Ctrl+C waits: posted and entered, or neither)
    def _post_accept(self) -> IocpOp:
        engine = self._engine
        engine.check_open()
        family = self.family
        conn = socket.socket(family, socket.SOCK_STREAM)
        op: IocpOp | None = None
        try:
            space = ffi.new("char[]", 2 * ACCEPT_ADDRESS_SPACE)
            received = ffi.new("DWORD *")
            op = IocpOp(self.sock, (conn, space, received))
            op.on_complete = self.on_accept_packet
            accept_ex = extensions(family).AcceptEx
            fd, conn_fd = self.sock.fileno(), conn.fileno()
            engine.enter(op, "AcceptEx", fd)  # before the call (IocpEngine.enter)
            ok = accept_ex(
                fd,
                conn_fd,
                space,
                0,
                ACCEPT_ADDRESS_SPACE,
                ACCEPT_ADDRESS_SPACE,
                received,
                op.overlapped,
            )
            engine.posted(op, bool(ok), "AcceptEx")
        except BaseException:
            # (posted: the socket is the kernel's until its packet)
            if op is None or not engine.holds(op):
                conn.close()
            raise
        return op

    def _accept_now(self) -> socket.socket | None:
        # (the listening socket is non-blocking; the new one inherits its mode,
        # which InheritedNonblocking records where the probe saw it: no
        # setblocking call for the stream; anyio_iocp._engines.iocp.inherited)
        sock = self.sock
        try:
            fd, _ = accept_descriptor(sock)
        except OSError as exc:
            if self._exhaustion(exc):
                raise  # a shortage: the pool pauses
            return None  # none waiting (WSAEWOULDBLOCK), or reset before it was taken
        try:
            return self._accepted_class(sock.family, sock.type, sock.proto, fd)
        except OSError:
            # (the object's own check of the descriptor refused it; not
            # expected: the descriptor is closed, not leaked)
            socket.close(fd)
            return None

    def on_accept_packet(self, op: IocpOp) -> None:
        """The packet of a posted accept: a connection, or why not."""
        conn = cast(tuple[socket.socket, Any, Any], op.keep)[0]
        code = op.error
        if conn.fileno() == -1:
            # given back (_give_back): whatever its packet says (cancelled; or a
            # connection that came first, closed with its socket), no error
            self.accept_failed(op, None)
            return
        if not code:
            if self._closing or not ws2.setsockopt(
                conn.fileno(),
                ws2.SOL_SOCKET,
                ws2.SO_UPDATE_ACCEPT_CONTEXT,
                ffi.cast("char *", self._listen_handle),
                ffi.sizeof("SOCKET"),
            ):
                self.accepted(op, conn)  # (closed at once when the listener is closing)
                return
            error = winerror(last_error(), "setsockopt(SO_UPDATE_ACCEPT_CONTEXT)")
            conn.close()
            self.accept_failed(op, error)
            return
        conn.close()
        shortage = ACCEPT_EXHAUSTION.get(code)
        if shortage:
            self.exhausted(op, shortage)
        elif code in ACCEPT_RETRY_ERRORS:
            self.accept_failed(op, None)
            with contextlib.suppress(OSError):
                self._refill()
        else:
            self.accept_failed(op, None if op.cancelled else op.oserror("AcceptEx"))

    def _exhaustion(self, exc: OSError) -> int:
        # Python's errno of WSAEMFILE is EMFILE, but WSAENOBUFS keeps its
        # Winsock number: the Winsock code is what tells
        shortage = ACCEPT_EXHAUSTION.get(getattr(exc, "winerror", None) or 0)
        return shortage or super()._exhaustion(exc)

    def _withdraw(self, op: IocpOp) -> None:
        self._engine.request_cancel(op)

    def _give_back(self, op: IocpOp) -> None:
        # The descriptor is wanted now, not when the packet arrives: cancel,
        # then close the accept's socket at once.  The op keeps the address
        # space and the OVERLAPPED alive until its packet.
        self._engine.request_cancel(op)
        cast(tuple[socket.socket, Any, Any], op.keep)[0].close()

    async def _drain(self, ops: list[IocpOp]) -> None:
        await self._engine.drain(ops)

    def _forget(self) -> None:
        self._engine.forget_listener(self)
        self._engine.forget(self.sock)
