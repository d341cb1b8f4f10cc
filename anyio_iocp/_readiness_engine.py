"""The readiness engine: non-blocking socket calls plus Trio's readiness waits.

This is the model of epoll/kqueue: ask the socket; when it answers "would
block", wait until Trio says the socket is ready, then ask again.  It runs
wherever Python and Trio do, and gives the same stream semantics as the
completion engines.  Because nothing is ever handed to the kernel ahead of time,
cancellation is simple: a cancelled wait has taken no data and sent nothing.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

import trio

from ._engine import DEFAULT_BUFFER_SIZE, Engine, EngineInfo, ListenerIO, StreamIO


async def _wait_readable(sock: socket.socket) -> None:
    try:
        await trio.lowlevel.wait_readable(sock)
    except trio.ClosedResourceError:
        # notify_closing() from close() in another task
        raise OSError(errno.EBADF, "socket closed while waiting") from None


async def _wait_writable(sock: socket.socket) -> None:
    try:
        await trio.lowlevel.wait_writable(sock)
    except trio.ClosedResourceError:
        raise OSError(errno.EBADF, "socket closed while waiting") from None


class ReadinessStreamIO(StreamIO):
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    async def receive(self, max_bytes: int) -> bytes:
        sock = self.sock
        size = min(max_bytes, DEFAULT_BUFFER_SIZE)
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                data = sock.recv(size)
            except BlockingIOError:
                await _wait_readable(sock)
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data

    async def send(self, data: memoryview) -> None:
        sock = self.sock
        await trio.lowlevel.checkpoint_if_cancelled()
        while data:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                await _wait_writable(sock)
            else:
                data = data[sent:]
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def close(self) -> None:
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


class ReadinessListenerIO(ListenerIO):
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    async def accept(self) -> socket.socket:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                conn, _addr = self.sock.accept()
            except BlockingIOError:
                await _wait_readable(self.sock)
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return conn

    async def close(self) -> None:
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


class ReadinessEngine(Engine):
    def __init__(self, info: EngineInfo) -> None:
        self.info = info

    def open_stream(self, sock: socket.socket) -> StreamIO:
        return ReadinessStreamIO(sock)

    def open_listener(self, sock: socket.socket) -> ListenerIO:
        return ReadinessListenerIO(sock)

    async def connect(self, sock: socket.socket, address: tuple[Any, ...]) -> None:
        sock.setblocking(False)
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            sock.connect(address)
        except BlockingIOError:
            pass
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        # In progress: wait until writable, then read the outcome.  Cancelling
        # here abandons the attempt; the caller closes the socket.
        await _wait_writable(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"connect to {address!r}: {os.strerror(err)}")
