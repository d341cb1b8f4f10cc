"""AnyIO's datagram sockets (UDP and UNIX) on top of any engine's MessageIO.

Written once for every engine, like :mod:`anyio_iocp._streams.sockets`: resource
guards, ``ClosedResourceError`` after ``aclose()``, ``BrokenResourceError``
with the OS error as cause, and the addresses AnyIO promises (IPv6 as
``(host, port)``).  Host names given to ``UDPSocket.send`` are resolved with
``anyio.getaddrinfo`` first, since the engines hand the kernel numeric
addresses.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import anyio
import trio
from anyio import BrokenResourceError, ClosedResourceError, ResourceGuard, TypedAttributeProvider
from anyio.abc import (
    ConnectedUDPSocket,
    ConnectedUNIXDatagramSocket,
    IPSockAddrType,
    UDPPacketType,
    UDPSocket,
    UNIXDatagramPacketType,
    UNIXDatagramSocket,
)

from anyio_iocp._interface.budget import ScheduleBudget
from anyio_iocp._interface.engine import EngineInfo, MessageIO
from anyio_iocp._internals.anyio_backend import convert_ipv6_sockaddr
from anyio_iocp._streams.attributes import TuningAttribute
from anyio_iocp._streams.sockets import schedule_point_unless_waited

#: the largest UDP payload, as AnyIO's own backends receive
MAX_DATAGRAM = 65536


class _EngineDatagrams(TypedAttributeProvider):
    """What every datagram socket class shares (first base of each class)."""

    def __init__(self, io: MessageIO, info: EngineInfo, budget: ScheduleBudget) -> None:
        self._io = io
        self._engine_info = info
        self._budget = budget  # (its pass count: whether a failed call waited)
        self._closed = False
        self._receive_guard = ResourceGuard("reading from")
        self._send_guard = ResourceGuard("writing to")

    @property
    def _raw_socket(self) -> socket.socket:
        return self._io.sock

    @property
    def engine_info(self) -> EngineInfo:
        """The engine this socket's messages go through."""
        return self._engine_info

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        # super() is the AnyIO socket class next in the MRO (its socket attributes)
        return {**super().extra_attributes, TuningAttribute.engine: lambda: self._engine_info}

    async def _fail_after_schedule_point(self, exc: Exception, passes: int) -> NoReturn:
        """Raise for a call that failed: closed or broken is decided first (a
        close meanwhile must not hide the error), then the call's schedule
        point, unless it waited."""
        closed = self._closed
        await schedule_point_unless_waited(self._budget, passes)
        if not isinstance(exc, OSError):
            raise exc
        if closed:
            raise ClosedResourceError from None
        raise BrokenResourceError(str(exc)) from exc

    # A datagram call is a cancel point and a schedule point every time (the
    # engines' MessageIO yields after a call that did not wait), also when
    # it fails: a task that retries a failing call (a closed socket, a
    # refused peer) must let the others run, as on Trio.

    async def _receive(self) -> tuple[bytes, Any]:
        with self._receive_guard:
            passes = self._budget.passes
            try:
                if self._closed:
                    await trio.lowlevel.checkpoint_if_cancelled()
                    raise ClosedResourceError
                data, _ancdata, _flags, address = await self._io.receive_msg(MAX_DATAGRAM, 0)
            except Exception as exc:  # (not Cancelled, a BaseException)
                await self._fail_after_schedule_point(exc, passes)
            return data, address

    async def _send(self, data: bytes, address: Any) -> None:
        with self._send_guard:
            passes = self._budget.passes
            try:
                if self._closed:
                    await trio.lowlevel.checkpoint_if_cancelled()
                    raise ClosedResourceError
                await self._io.send_msg(memoryview(data).cast("B"), [], address)
            except Exception as exc:  # (not Cancelled, a BaseException)
                await self._fail_after_schedule_point(exc, passes)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._io.close()
        await trio.lowlevel.checkpoint()


async def _numeric(family: int, host: str, port: int) -> tuple[Any, ...]:
    """``(host, port)`` with ``host`` numeric, resolving a name if needed."""
    try:
        socket.inet_pton(family, host)
    except (OSError, ValueError, TypeError):
        flags = socket.AI_V4MAPPED if family == socket.AF_INET6 else 0
        infos = await anyio.getaddrinfo(
            host, port, family=family, type=socket.SOCK_DGRAM, flags=flags
        )
        return infos[0][4]
    return host, port


class EngineUDPSocket(_EngineDatagrams, UDPSocket):
    async def receive(self) -> tuple[bytes, IPSockAddrType]:
        data, address = await self._receive()
        return data, convert_ipv6_sockaddr(address)

    async def send(self, item: UDPPacketType) -> None:
        data, address = item
        family = self._io.sock.family
        if family in (socket.AF_INET, socket.AF_INET6):
            # (host, port), or IPv6's (host, port, flowinfo, scope_id)
            resolved = await _numeric(family, address[0], address[1])
            if len(address) > 2:
                resolved = (resolved[0], resolved[1], *address[2:])
            address = resolved
        await self._send(data, address)


class EngineConnectedUDPSocket(_EngineDatagrams, ConnectedUDPSocket):
    async def receive(self) -> bytes:
        return (await self._receive())[0]

    async def send(self, item: bytes) -> None:
        await self._send(item, None)


class EngineUNIXDatagramSocket(_EngineDatagrams, UNIXDatagramSocket):
    async def receive(self) -> UNIXDatagramPacketType:
        return await self._receive()

    async def send(self, item: UNIXDatagramPacketType) -> None:
        data, path = item
        await self._send(data, path)


class EngineConnectedUNIXDatagramSocket(_EngineDatagrams, ConnectedUNIXDatagramSocket):
    async def receive(self) -> bytes:
        return (await self._receive())[0]

    async def send(self, item: bytes) -> None:
        await self._send(item, None)
