"""Messages (datagrams, descriptor passing) by readiness: try the call, and
wait with Trio's ``wait_readable``/``wait_writable`` when it would block.

This is the readiness engine's implementation and the default of every engine
that has no completion path for messages.  A cancelled wait has received
nothing, so no message can be lost.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import trio
from trio import lowlevel  # (faster than trio.lowlevel: see _streams/__init__.py)

from anyio_iocp._interface.engine import Message, MessageIO
from anyio_iocp._interface.sockaddr import AncData
from anyio_iocp._interface.yielding import shielded_yield

_HAS_RECVMSG = hasattr(socket.socket, "recvmsg")


async def wait_readable(sock: socket.socket) -> None:
    try:
        await lowlevel.wait_readable(sock)
    except trio.ClosedResourceError:
        # notify_closing() from close() in another task
        raise OSError(errno.EBADF, "socket closed while waiting") from None


async def wait_writable(sock: socket.socket) -> None:
    try:
        await lowlevel.wait_writable(sock)
    except trio.ClosedResourceError:
        raise OSError(errno.EBADF, "socket closed while waiting") from None


class ReadinessMessageIO(MessageIO):
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    async def receive_msg(self, bufsize: int, ancbufsize: int) -> Message:
        await lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                if _HAS_RECVMSG:  # its flags say MSG_TRUNC, as io_uring's do
                    data, ancdata, flags, address = self.sock.recvmsg(bufsize, ancbufsize)
                else:  # Windows sockets have no recvmsg
                    (data, address), ancdata, flags = self.sock.recvfrom(bufsize), [], 0
            except BlockingIOError:
                await wait_readable(self.sock)
                continue
            await shielded_yield()
            return data, ancdata, flags, address

    async def send_msg(self, data: memoryview, ancdata: AncData, address: Any) -> int:
        await lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                if ancdata:
                    sent = self.sock.sendmsg([data], ancdata, 0, *([address] if address else []))
                elif address is None:  # Windows sockets have no sendmsg
                    sent = self.sock.send(data)
                else:
                    sent = self.sock.sendto(data, address)
            except BlockingIOError:
                await wait_writable(self.sock)
                continue
            await shielded_yield()
            return sent

    async def close(self, close_socket: bool = True) -> None:
        if close_socket:
            lowlevel.notify_closing(self.sock)
            self.sock.close()
