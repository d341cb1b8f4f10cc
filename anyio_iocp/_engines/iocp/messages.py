"""UDP on the IOCP engine: overlapped ``WSARecvFrom`` and ``WSASendTo``.

The model
---------
A datagram socket is associated with Trio's completion port under the
engine's key, like a stream.  A call first tries the socket directly without
blocking (``recvfrom``/``sendto``): when a datagram is waiting, or there is
room to send, nothing is posted.  Otherwise one operation is posted and the
task waits for its packet: ``WSARecvFrom`` with a buffer of the size asked for,
a ``SOCKADDR_STORAGE`` for the sender and the ``int`` the kernel writes that
address's length to; ``WSASendTo`` with the data and the packed address, or
``WSASend`` on a connected socket when no address is given.  All of that
memory belongs to the engine's :class:`~anyio_iocp._engines.iocp.engine.IocpOp` until its
packet arrives, whatever happens to the task.

Cancellation
------------
As on io_uring (:mod:`anyio_iocp._engines.io_uring.messages`), a posted receive is not
left behind for a later call: a datagram cannot be split, and the next call
may want another size.  The cancelled task cancels its operation with
``CancelIoEx`` and waits for the packet.  ``STATUS_CANCELLED`` means nothing
was received, and Cancelled propagates.  A packet that says the receive
completed anyway carries a datagram: it is *returned*, and the cancellation is
delivered at the caller's next checkpoint.  No datagram is lost in between.
Sends work the same way.  ``close()`` cancels what is in flight, waits for
every packet, then closes the socket; a receive or send it cut off raises
``EBADF`` (AnyIO: ``ClosedResourceError``).

Errors
------
Errors are the ``OSError`` subclasses the readiness path raises on Windows
(the packet's status through ``WSAGetOverlappedResult``): a datagram larger
than the buffer is ``WSAEMSGSIZE`` on both paths, and a datagram too large to
send fails at once with the same code.  Windows reports an ICMP "port
unreachable" as ``WSAECONNRESET`` on the socket's next receive (a completion
may say ``ERROR_PORT_UNREACHABLE`` instead: it is raised as ``WSAECONNRESET``
too).  On a *connected* socket that is kept (:class:`ConnectionResetError`,
AnyIO's ``BrokenResourceError``; Linux says ``ECONNREFUSED`` there).  On an
*unconnected* socket, which may talk to many peers, it is turned off at the
source with ``SIO_UDP_CONNRESET``: one peer gone must not break a server's
socket, and Linux does not report it there either.  (asyncio's proactor
ignores the report instead, when a ``WSARecvFrom`` completes with it.)

Only AF_INET and AF_INET6 datagram sockets come here.  Ancillary data belongs
to UNIX sockets, which Windows does not run through this engine.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import trio

from anyio_iocp._engines.iocp.engine import IocpEngine, IocpOp
from anyio_iocp._engines.iocp.winsock import ffi, pack_sockaddr, report_udp_resets, winerror, ws2
from anyio_iocp._flow.posted_messages import PostedMessageIO
from anyio_iocp._interface.engine import Message
from anyio_iocp._interface.sockaddr import SOCKADDR_STORAGE, AncData, unpack_sockaddr
from anyio_iocp._interface.yielding import shielded_yield

_log = logging.getLogger("anyio_iocp")

#: receive buffers need no zeroing: only the bytes the kernel wrote are read
_new_buffer = ffi.new_allocator(should_clear_after_alloc=False)


def _no_ancillary(size: int) -> None:
    if size:
        raise NotImplementedError(
            "ancillary data needs a UNIX socket; the IOCP engine carries UDP only"
        )


def is_connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


class IocpMessageIO(PostedMessageIO):
    #: try the socket without blocking before posting (tests turn it off to
    #: send every datagram through the completion port)
    direct_first = True

    def __init__(self, engine: IocpEngine, sock: socket.socket) -> None:
        super().__init__(engine, sock)
        self._engine = engine
        if not is_connected(sock):
            try:
                report_udp_resets(sock, False)
            except OSError:  # pragma: no cover (every Windows since XP has it)
                _log.warning("SIO_UDP_CONNRESET failed: ICMP errors may fail receives")

    def _not_posted(self, op: IocpOp) -> None:
        # No packet will come: what the op holds goes now, a send's view of
        # the caller's bytes with it (no export left to a traceback's cycle)
        keep: Any = op.keep
        for item in keep:
            if isinstance(item, ffi.CData):
                ffi.release(item)

    def _outcome(self, op: IocpOp, what: str) -> int:
        if op.error:
            if op.cancelled and self._closing:
                raise self._closed_error()
            if op.error == ws2.ERROR_PORT_UNREACHABLE:
                # how a completion may spell the ICMP report that recvfrom()
                # raises as WSAECONNRESET: the same exception either way
                raise winerror(ws2.WSAECONNRESET, f"{what}: port unreachable")
            raise op.oserror(what)
        return op.transferred

    # -- receiving ------------------------------------------------------------

    async def receive_msg(self, bufsize: int, ancbufsize: int) -> Message:
        _no_ancillary(ancbufsize)
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        if self.direct_first:
            try:
                data, address = self.sock.recvfrom(bufsize)
            except BlockingIOError:
                pass
            else:
                await shielded_yield()
                return data, [], 0, address
        op = self._post_listed(self._new_recvfrom(bufsize), self._start_recvfrom)
        size = await self._run(op, "WSARecvFrom")
        keep: Any = op.keep
        buf, _wsabuf, _flags, name, namelen = keep
        # a connected socket may leave the sender's address unwritten
        raw = ffi.buffer(name, namelen[0])[:]
        address = unpack_sockaddr(raw) if raw else self.sock.getpeername()
        return ffi.buffer(buf, size)[:], [], 0, address

    def _new_recvfrom(self, bufsize: int) -> IocpOp:
        """A ``WSARecvFrom`` of ``bufsize`` bytes, made but not posted."""
        self._engine.check_open()
        buf = _new_buffer("char[]", max(bufsize, 1))
        wsabuf = ffi.new("WSABUF *", (bufsize, buf))
        flags = ffi.new("DWORD *", 0)
        name = ffi.new("char[]", SOCKADDR_STORAGE)
        namelen = ffi.new("int *", SOCKADDR_STORAGE)
        return IocpOp(self.sock, (buf, wsabuf, flags, name, namelen))

    def _start_recvfrom(self, op: IocpOp) -> None:
        engine = self._engine
        keep: Any = op.keep
        _buf, wsabuf, flags, name, namelen = keep
        fd = self.sock.fileno()
        engine.enter(op, "WSARecvFrom", fd)  # before the call (IocpEngine.enter)
        rc = ws2.WSARecvFrom(fd, wsabuf, 1, ffi.NULL, flags, name, namelen, op.overlapped, ffi.NULL)
        engine.posted(op, rc == 0, "WSARecvFrom")

    # -- sending --------------------------------------------------------------

    async def send_msg(self, data: memoryview, ancdata: AncData, address: Any) -> int:
        _no_ancillary(len(ancdata))
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        if self.direct_first:
            try:
                sent = self.sock.send(data) if address is None else self.sock.sendto(data, address)
            except BlockingIOError:
                pass
            else:
                await shielded_yield()
                return sent
        engine = self._engine
        if address is None:
            op = self._post_listed(engine.new_send(self.sock, data), engine.start_send)
            return await self._run(op, "WSASend")
        op = self._post_listed(self._new_sendto(data, address), self._start_sendto)
        return await self._run(op, "WSASendTo")

    def _new_sendto(self, data: memoryview, address: Any) -> IocpOp:
        """A ``WSASendTo`` of ``data`` to ``address``, made but not posted."""
        self._engine.check_open()
        name = ffi.from_buffer(pack_sockaddr(self.sock.family, address))
        payload = ffi.from_buffer(data)  # (the view of the caller's bytes: made last)
        try:
            wsabuf = ffi.new("WSABUF *", (len(payload), ffi.cast("char *", payload)))
            return IocpOp(self.sock, (data, payload, wsabuf, name))
        except BaseException:
            ffi.release(payload)
            raise

    def _start_sendto(self, op: IocpOp) -> None:
        engine = self._engine
        keep: Any = op.keep
        _data, _payload, wsabuf, name = keep
        fd, namelen = self.sock.fileno(), len(name)
        engine.enter(op, "WSASendTo", fd)  # before the call (IocpEngine.enter)
        rc = ws2.WSASendTo(fd, wsabuf, 1, ffi.NULL, 0, name, namelen, op.overlapped, ffi.NULL)
        engine.posted(op, rc == 0, "WSASendTo")

    # -- closing --------------------------------------------------------------

    def _release(self) -> None:
        self._engine.forget(self.sock)  # its handle number may be reused
        self.sock.close()
