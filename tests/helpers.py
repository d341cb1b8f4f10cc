"""Small helpers shared by the test modules."""

from __future__ import annotations

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream
from anyio.streams.stapled import MultiListener


def first_listener(multi: anyio.abc.Listener[SocketStream]) -> SocketListener:
    assert isinstance(multi, MultiListener)
    listener = multi.listeners[0]
    assert isinstance(listener, SocketListener)
    return listener


async def open_pair(host: str = "127.0.0.1") -> tuple[SocketListener, SocketStream, SocketStream]:
    """A listener, a client stream connected to it, and the accepted server stream."""
    listener = first_listener(await anyio.create_tcp_listener(local_host=host))
    client = await anyio.connect_tcp(host, listener.extra(SocketAttribute.local_port))
    server = await listener.accept()
    return listener, client, server


async def recv_exactly(stream: SocketStream, n: int) -> bytes:
    parts = []
    while n:
        chunk = await stream.receive(n)
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)
