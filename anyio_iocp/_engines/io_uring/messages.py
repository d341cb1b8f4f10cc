"""Messages on the io_uring engine: ``IORING_OP_RECVMSG`` and ``IORING_OP_SENDMSG``.

Used for UDP and UNIX datagram sockets, and for descriptor passing
(``SCM_RIGHTS``) on UNIX streams.

As for streams, a call first tries the socket directly without blocking; only
when nothing is there (or there is no room) is the operation posted to the
ring.  The message header, the address, the iovec, the data and the control
buffer all belong to the posted :class:`~anyio_iocp._engines.io_uring.op.UringOp` until its
completion is reaped.

Cancellation: a message cannot be split, so a posted receive is not left
behind for a later call (it might be sized for another caller).  The receive
is cancelled in the kernel and its completion awaited: either the kernel
cancelled it (nothing was received, ``Cancelled`` propagates) or it had
already completed, and the message is returned; the cancellation is then seen
at the caller's next checkpoint.  Sends work the same way.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any

import trio
from trio.lowlevel import enable_ki_protection

from anyio_iocp._engines.io_uring._uring import ffi, lib
from anyio_iocp._flow.posted_messages import PostedMessageIO
from anyio_iocp._interface.engine import Message, oserror
from anyio_iocp._interface.sockaddr import (
    SOCKADDR_STORAGE,
    AncData,
    pack_ancdata,
    pack_sockaddr,
    unpack_ancdata,
    unpack_sockaddr,
)
from anyio_iocp._interface.yielding import shielded_yield

if TYPE_CHECKING:
    from anyio_iocp._engines.io_uring.engine import UringEngine
    from anyio_iocp._engines.io_uring.op import UringOp

SEND_FLAGS = socket.MSG_NOSIGNAL

_new_buffer = ffi.new_allocator(should_clear_after_alloc=False)


def _msghdr(data: Any, size: int, name: Any, namelen: int, control: Any, controllen: int) -> Any:
    msg = ffi.new("struct msghdr *")
    iov = ffi.new("struct iovec *")
    iov.iov_base = data
    iov.iov_len = size
    msg.msg_iov = iov
    msg.msg_iovlen = 1
    msg.msg_name = name
    msg.msg_namelen = namelen
    msg.msg_control = control
    msg.msg_controllen = controllen
    return msg, iov


class UringMessageIO(PostedMessageIO):
    def __init__(self, engine: UringEngine, sock: socket.socket) -> None:
        super().__init__(engine, sock)
        self.fd = sock.fileno()
        self._engine = engine

    def _not_posted(self, op: UringOp) -> None:
        op.release_pins()

    def _outcome(self, op: UringOp, what: str) -> int:
        if op.result < 0:
            if op.result == -errno.ECANCELED and self._closing:
                raise self._closed_error()
            raise oserror(op.result, what)
        return op.result

    async def receive_msg(self, bufsize: int, ancbufsize: int) -> Message:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        try:
            data, ancdata, flags, address = self.sock.recvmsg(bufsize, ancbufsize)
        except BlockingIOError:
            pass
        else:
            await shielded_yield()
            return data, ancdata, flags, address
        buf = _new_buffer("char[]", max(bufsize, 1))
        name = ffi.new("char[]", SOCKADDR_STORAGE)
        control = ffi.new("char[]", ancbufsize) if ancbufsize else ffi.NULL
        msg, iov = _msghdr(buf, bufsize, name, SOCKADDR_STORAGE, control, ancbufsize)
        engine = self._engine
        op = engine.new_op((msg, iov, buf, name, control))
        self._post_listed(op, engine.post_registered, lib.iou_prep_recvmsg, self.fd, msg, 0)
        size = await self._run(op, "recvmsg")
        ancdata = unpack_ancdata(ffi.buffer(control, msg.msg_controllen)[:]) if ancbufsize else []
        return (
            ffi.buffer(buf, size)[:],
            ancdata,
            msg.msg_flags,
            unpack_sockaddr(ffi.buffer(name, msg.msg_namelen)[:]),
        )

    async def send_msg(self, data: memoryview, ancdata: AncData, address: Any) -> int:
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        try:
            if address is None:
                sent = self.sock.sendmsg([data], ancdata, SEND_FLAGS)
            else:
                sent = self.sock.sendmsg([data], ancdata, SEND_FLAGS, address)
        except BlockingIOError:
            pass
        else:
            await shielded_yield()
            return sent
        op = self._post_sendmsg(data, ancdata, address)
        return await self._run(op, "sendmsg")

    @enable_ki_protection  # (Ctrl+C waits: posted, or no view of the data left)
    def _post_sendmsg(self, data: memoryview, ancdata: AncData, address: Any) -> UringOp:
        """Post a ``sendmsg`` of ``data``; the view of the caller's bytes is
        made last, and released at once if the send is not posted."""
        raw_name = b"" if address is None else pack_sockaddr(self.sock.family, address)
        name = ffi.from_buffer(raw_name) if raw_name else ffi.NULL
        raw_control = pack_ancdata(ancdata)
        control = ffi.from_buffer(raw_control) if raw_control else ffi.NULL
        payload = ffi.from_buffer(data)
        try:
            msg, iov = _msghdr(payload, len(data), name, len(raw_name), control, len(raw_control))
            keep = (msg, iov, payload, name, control, raw_name, raw_control)
            pins = tuple(pin for pin in (payload, name, control) if pin != ffi.NULL)
        except BaseException:
            ffi.release(payload)
            raise
        engine = self._engine
        op = engine.new_op(keep, pins)  # (which releases them if it fails)
        prep = lib.iou_prep_sendmsg
        return self._post_listed(op, engine.post_registered, prep, self.fd, msg, SEND_FLAGS)
