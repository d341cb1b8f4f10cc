"""TCP_NODELAY on accepted connections: every one has it, whether the kernel
passed it on from the listener or the listener had to set it itself."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketListener, SocketStream
from helpers import first_listener

import anyio_iocp
from anyio_iocp._interface.engine import set_nodelay
from anyio_iocp._streams import nodelay
from anyio_iocp._streams.sockets import EngineTCPListener

pytestmark = pytest.mark.anyio

CONNECTIONS = 3


def has_nodelay(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def accept_some(
    listener: SocketListener, host: str, first_bytes: bool = False, count: int = CONNECTIONS
) -> list[SocketStream]:
    """``count`` connections from plain sockets (which leave Nagle on),
    accepted one after the other; with ``first_bytes`` each sends a byte
    (an idletimeout listener hands over only connections that did)."""
    port = listener.extra(SocketAttribute.local_port)
    streams = []
    for _ in range(count):
        peer = socket.create_connection((host, port))
        try:
            if first_bytes:
                peer.sendall(b"x")
            stream = await listener.accept()
        finally:
            peer.close()
        streams.append(stream)
    return streams


async def check_accepted(
    listener: SocketListener, host: str, first_bytes: bool = False, count: int = CONNECTIONS
) -> None:
    streams = await accept_some(listener, host, first_bytes, count)
    try:
        for index, stream in enumerate(streams):
            assert has_nodelay(stream.extra(SocketAttribute.raw_socket)), f"connection {index}"
    finally:
        for stream in streams:
            await stream.aclose()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_every_accepted_connection_has_nodelay(host: str) -> None:
    async with first_listener(await anyio.create_tcp_listener(local_host=host)) as listener:
        await check_accepted(listener, host)


async def test_connections_waiting_for_their_first_bytes_have_it_too() -> None:
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", idletimeout=5000)
    async with multi:
        await check_accepted(first_listener(multi), "127.0.0.1", first_bytes=True)


@pytest.mark.parametrize("idletimeout", [0, 5000])
async def test_a_listener_whose_option_was_cleared_sets_it_on_each_connection(
    idletimeout: int,
) -> None:
    # The kernel passes on what the listener has: with the option cleared
    # there, nothing is inherited, and each connection must be checked and
    # given its own (also behind the idletimeout gate).
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", idletimeout=idletimeout)
    async with multi:
        listener = first_listener(multi)
        raw = listener.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        await check_accepted(listener, "127.0.0.1", bool(idletimeout), nodelay.PROBES + 1)
        assert isinstance(listener, EngineTCPListener)
        assert listener._nodelay.inherited is False
        assert listener._nodelay.misses == nodelay.PROBES


async def test_a_socket_wrapped_with_connections_queued_still_inherits() -> None:
    # Connections whose handshakes came before the listener had the option
    # lack it; the ones after have it, and the listener keeps asking until one does.
    raw = socket.create_server(("127.0.0.1", 0))
    port = raw.getsockname()[1]
    # (three: fewer than the listener asks, nodelay.PROBES)
    early = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        async with await SocketListener.from_socket(raw) as listener:
            late = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
            try:
                streams = [await listener.accept() for _ in range(len(early) + len(late))]
                for index, stream in enumerate(streams):
                    assert has_nodelay(stream.extra(SocketAttribute.raw_socket)), index
                    await stream.aclose()
                assert isinstance(listener, EngineTCPListener)
                if sys.platform == "linux":
                    assert listener._nodelay.inherited is True
                    assert listener._nodelay.misses == len(early)
            finally:
                for peer in late:
                    peer.close()
    finally:
        for peer in early:
            peer.close()


async def test_where_inherited_later_connections_make_no_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[socket.socket] = []

    def counted(sock: socket.socket) -> None:
        calls.append(sock)
        set_nodelay(sock)

    monkeypatch.setattr(nodelay, "set_nodelay", counted)
    async with first_listener(await anyio.create_tcp_listener(local_host="127.0.0.1")) as listener:
        await check_accepted(listener, "127.0.0.1")
        assert isinstance(listener, EngineTCPListener)
        inherited = listener._nodelay.inherited
    if sys.platform == "linux":
        assert inherited is True  # Linux copies the listener's TCP_NODELAY
    assert len(calls) == (0 if inherited else CONNECTIONS)


async def test_a_unix_listener_is_left_alone(tmp_path: Path) -> None:
    if not hasattr(socket, "AF_UNIX") or sys.platform == "win32":
        pytest.skip("UNIX sockets")
    path = f"{tmp_path}/sock"
    async with await anyio.create_unix_listener(path) as listener:
        peer = socket.socket(socket.AF_UNIX)
        peer.connect(path)
        async with await listener.accept():
            pass
        peer.close()
        assert isinstance(listener, EngineTCPListener)
        assert listener._nodelay.inherited is False
