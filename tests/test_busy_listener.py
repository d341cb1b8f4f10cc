"""The accept pool on an engine with a direct accept (io_uring: ``accept4``,
IOCP: ``accept()``): while connections wait in the kernel's queue, a refill
takes them with the direct call and posts no accept; an idle listener has
its pool posted again (anyio_iocp._flow.accept_pool)."""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from helpers import first_listener, post_failing_iocp_accept, post_failing_ring_accept

import anyio_iocp
from anyio_iocp import TuningAttribute

pytestmark = pytest.mark.anyio

BACKLOG = 2
CLIENTS = 7


def kernel_accept_queue(listening: socket.socket) -> int:
    """Connections waiting in a Linux listening socket's accept queue
    (``tcpi_unacked`` of its ``TCP_INFO``, at offset 24)."""
    info = listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    count: int = struct.unpack_from("I", info, 24)[0]
    return count


async def wait_until_queued(listening: socket.socket, count: int) -> None:
    """Until ``count`` connections wait in the listen queue, beyond the pool.
    Windows has no call that counts them: there, until the pool's accepts
    completed (the connections behind them finished their handshakes before
    the clients' connects returned)."""
    with anyio.fail_after(5):
        if sys.platform == "win32":
            while anyio_iocp.statistics().in_flight.get("accept", 0):
                await anyio.sleep(0.01)
        else:
            while kernel_accept_queue(listening) < count:
                await anyio.sleep(0.01)


def assert_non_blocking_and_not_inherited(sock: socket.socket) -> None:
    """What Python believes of an accepted socket is what it is (a blocking
    one taken for non-blocking would stall the loop)."""
    assert sock.gettimeout() == 0.0
    if sys.platform == "win32":
        # (Windows cannot read a socket's blocking mode back)
        assert not os.get_handle_inheritable(sock.fileno())
    else:
        assert not os.get_blocking(sock.fileno())
        assert not os.get_inheritable(sock.fileno())


async def test_waiting_connections_are_taken_directly(engine_name: str) -> None:
    if engine_name not in ("io_uring", "iocp"):
        pytest.skip(f"the {engine_name} engine has no posted accepts")
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=BACKLOG)
    listener = first_listener(multi)
    port = listener.extra(SocketAttribute.local_port)
    async with multi:
        # The pool of 2 takes the first two connections; the other five wait
        # in the kernel's listen queue (connect returns once the handshake is
        # done, so each is there before the next starts).
        clients = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(CLIENTS)]
        accepted: list[SocketStream] = []
        try:
            await wait_until_queued(listener.extra(SocketAttribute.raw_socket), CLIENTS - BACKLOG)
            for n in range(CLIENTS):
                with anyio.fail_after(5):
                    accepted.append(await listener.accept())
                stats = anyio_iocp.statistics()
                if n < CLIENTS - 1:
                    # busy: no accept posted beyond the first pool, and the
                    # queue stays within the backlog
                    assert stats.posted["accept"] == BACKLOG
                    assert listener.extra(TuningAttribute.backlog).in_use <= BACKLOG
            # five came through the direct call, each once
            assert stats.direct_calls["accept"] == CLIENTS - BACKLOG
            # posted accepts and direct ones alike hand over sockets that are
            # non-blocking and not inherited by child processes
            for stream in [*accepted, *clients]:
                assert_non_blocking_and_not_inherited(stream.extra(SocketAttribute.raw_socket))
            ports = [s.extra(SocketAttribute.remote_port) for s in accepted]
            assert sorted(ports) == sorted(c.extra(SocketAttribute.local_port) for c in clients)
            # idle after the last: the pool is posted again, in full
            assert stats.posted["accept"] == 2 * BACKLOG
            assert stats.in_flight["accept"] == BACKLOG
            # and a connection that comes now meets a posted accept
            late = await anyio.connect_tcp("127.0.0.1", port)
            clients.append(late)
            with anyio.fail_after(5):
                accepted.append(await listener.accept())
            stats = anyio_iocp.statistics()
            assert stats.direct_calls["accept"] == CLIENTS - BACKLOG
            assert accepted[-1].extra(SocketAttribute.remote_port) == late.extra(
                SocketAttribute.local_port
            )
            # the bytes of each connection reach its own stream
            by_port = {s.extra(SocketAttribute.remote_port): s for s in accepted}
            for i, client in enumerate(clients):
                await client.send(b"client %d" % i)
                server = by_port[client.extra(SocketAttribute.local_port)]
                with anyio.fail_after(5):
                    assert await server.receive() == b"client %d" % i
        finally:
            for stream in [*clients, *accepted]:
                await stream.aclose()


#: what a posted accept whose connection another accept took ends with:
#: io_uring's EAGAIN; Winsock's WSAEWOULDBLOCK, or ERROR_NOT_READY where Wine
#: converts the status differently (anyio_iocp._engines.iocp.listener)
TAKEN_ERRORS = {"io_uring": (errno.EAGAIN,), "iocp": (10035, 21)}


@pytest.mark.parametrize("which", [0, 1], ids=["first", "second"])
async def test_a_posted_accept_whose_connection_was_taken_is_no_error(
    engine_name: str, which: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A posted accept may fail when the connection that woke it went to
    another accept (io_uring: the pool's accept4, or the kernel's retry of a
    non-blocking socket's accept; under Wine: a direct accept that took the
    connection a pending AcceptEx was being completed with): the pool posts
    again, and accept() raises nothing.  The first accept posted here is a
    stand-in that completes so (each of the engine's codes in turn)."""
    if engine_name not in TAKEN_ERRORS:
        pytest.skip(f"the {engine_name} engine posts no accepts")
    codes = TAKEN_ERRORS[engine_name]
    if which >= len(codes):
        pytest.skip(f"the {engine_name} engine knows {len(codes)} such error(s)")
    code = codes[which]
    listener_class: Any
    if engine_name == "io_uring":
        from anyio_iocp._engines.io_uring.listener import UringListenerIO as listener_class

        def post_failing(listener: Any) -> Any:
            return post_failing_ring_accept(listener, code)
    else:
        from anyio_iocp._engines.iocp.listener import IocpListenerIO as listener_class

        def post_failing(listener: Any) -> Any:
            return post_failing_iocp_accept(listener, code)

    real_post_accept = listener_class._post_accept
    outrun: list[Any] = []

    def post_accept(listener: Any) -> Any:
        if outrun:
            return real_post_accept(listener)
        outrun.append(post_failing(listener))
        return outrun[-1]

    monkeypatch.setattr(listener_class, "_post_accept", post_accept)
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=1)
    listener = first_listener(multi)
    port = listener.extra(SocketAttribute.local_port)
    async with multi:
        with anyio.fail_after(5):
            while not outrun[0].done:
                await anyio.sleep(0.01)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            with anyio.fail_after(5):
                server = await listener.accept()
            async with server:
                await client.send(b"ping")
                assert await server.receive() == b"ping"
