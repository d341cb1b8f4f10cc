"""The accept pool on an engine with a direct accept (io_uring: ``accept4``,
IOCP: ``accept()``): while connections wait in the kernel's queue, a refill
takes them with the direct call and posts no accept; an idle listener has
its pool posted again, and on IOCP a busy one that caught up posts only the
accept that wakes it (anyio_iocp._flow.accept_pool)."""

from __future__ import annotations

import errno
import os
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, NamedTuple

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketListener, SocketStream
from helpers import (
    first_listener,
    listener_class,
    poll_until,
    post_failing_iocp_accept,
    post_failing_ring_accept,
)

import anyio_iocp
from anyio_iocp import TuningAttribute
from anyio_iocp._flow import accept_pool

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


#: a receive timeout of 2 s, as SO_RCVTIMEO takes it here (Winsock: a DWORD
#: of milliseconds; POSIX: a struct timeval)
RECEIVE_TIMEOUT = struct.pack("I", 2000) if sys.platform == "win32" else struct.pack("ll", 2, 0)


def assert_recv_does_not_wait(sock: socket.socket) -> None:
    """A receive with nothing to read fails at once: the descriptor itself is
    non-blocking (Windows cannot read the mode back; a blocking socket would
    wait for the receive timeout set here, and stall the loop in a run)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, RECEIVE_TIMEOUT)
    start = time.monotonic()
    with pytest.raises(BlockingIOError):
        sock.recv(1)
    assert time.monotonic() - start < 1.0


def assert_non_blocking_and_not_inherited(sock: socket.socket) -> None:
    """What Python believes of an accepted socket is what it is (a blocking
    one taken for non-blocking would stall the loop)."""
    assert sock.gettimeout() == 0.0
    assert_recv_does_not_wait(sock)
    if sys.platform == "win32":
        assert not os.get_handle_inheritable(sock.fileno())
    else:
        assert not os.get_blocking(sock.fileno())
        assert not os.get_inheritable(sock.fileno())


class Queued(NamedTuple):
    listener: SocketListener
    port: int
    #: the clients, the test may add more
    clients: list[SocketStream]
    #: the streams the test accepts
    accepted: list[SocketStream]


@asynccontextmanager
async def queued_connections(backlog: int, clients: int) -> AsyncIterator[Queued]:
    """A listener with a pool of ``backlog`` and ``clients`` connections: the
    pool's accepts took the first ones, the others wait in the kernel's
    listen queue (connect returns once the handshake is done, so each is
    there before the next starts).  Every stream is closed at the end."""
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=backlog)
    listener = first_listener(multi)
    port = listener.extra(SocketAttribute.local_port)
    async with multi, AsyncExitStack() as streams:
        queued = Queued(listener, port, [], [])
        # every stream is closed, even if closing another raised
        streams.push_async_callback(close_all, queued.accepted)
        streams.push_async_callback(close_all, queued.clients)
        for _ in range(clients):
            queued.clients.append(await anyio.connect_tcp("127.0.0.1", port))
        await wait_until_queued(listener.extra(SocketAttribute.raw_socket), clients - backlog)
        yield queued


async def close_all(streams: list[SocketStream]) -> None:
    for stream in streams:
        await anyio.aclose_forcefully(stream)


async def accept(queued: Queued, count: int) -> None:
    for _ in range(count):
        with anyio.fail_after(5):
            queued.accepted.append(await queued.listener.accept())


async def assert_each_reaches_its_own_stream(queued: Queued) -> None:
    """Every client was accepted once, and its bytes reach its own stream."""
    clients, accepted = queued.clients, queued.accepted
    ports = [s.extra(SocketAttribute.remote_port) for s in accepted]
    assert sorted(ports) == sorted(c.extra(SocketAttribute.local_port) for c in clients)
    by_port = {s.extra(SocketAttribute.remote_port): s for s in accepted}
    for i, client in enumerate(clients):
        await client.send(b"client %d" % i)
        server = by_port[client.extra(SocketAttribute.local_port)]
        with anyio.fail_after(5):
            assert await server.receive() == b"client %d" % i


async def test_waiting_connections_are_taken_directly(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if engine_name not in ("io_uring", "iocp"):
        pytest.skip(f"the {engine_name} engine has no posted accepts")
    # no rate of connections counts as busy here: idle, the listener posts
    # its pool in full (the busy case is the test below)
    monkeypatch.setattr(accept_pool, "BUSY_GAP", 0.0)
    async with queued_connections(BACKLOG, CLIENTS) as queued:
        # the pool of 2 took the first two connections; the other five wait
        for n in range(CLIENTS):
            await accept(queued, 1)
            stats = anyio_iocp.statistics()
            if n < CLIENTS - 1:
                # busy: no accept posted beyond the first pool, and the
                # queue stays within the backlog
                assert stats.posted["accept"] == BACKLOG
                assert queued.listener.extra(TuningAttribute.backlog).in_use <= BACKLOG
        # five came through the direct call, each once
        assert stats.direct_calls["accept"] == CLIENTS - BACKLOG
        # posted accepts and direct ones alike hand over sockets that are
        # non-blocking and not inherited by child processes
        for stream in [*queued.accepted, *queued.clients]:
            assert_non_blocking_and_not_inherited(stream.extra(SocketAttribute.raw_socket))
        # idle after the last: the pool is posted again, in full
        assert stats.posted["accept"] == 2 * BACKLOG
        assert stats.in_flight["accept"] == BACKLOG
        # and a connection that comes now meets a posted accept
        late = await anyio.connect_tcp("127.0.0.1", queued.port)
        queued.clients.append(late)
        await accept(queued, 1)
        stats = anyio_iocp.statistics()
        assert stats.direct_calls["accept"] == CLIENTS - BACKLOG
        assert queued.accepted[-1].extra(SocketAttribute.remote_port) == late.extra(
            SocketAttribute.local_port
        )
        await assert_each_reaches_its_own_stream(queued)


@pytest.mark.parametrize("policy", ["engine's", "iocp's"])
async def test_a_busy_listener_that_caught_up_posts_one_accept(
    engine_name: str, policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IOCP: a listener that goes idle right after taking connections, some
    of them waiting for the direct call, posts one accept, the one that wakes
    it, and goes back to the direct call once its connection came; a
    listener idle after a quiet spell posts the pool in full.  io_uring,
    whose posted accepts do not stop its direct call, posts the pool in full
    either way; with IOCP's policy flags (``iocp's``) it runs IOCP's rule,
    so that Linux runs it too."""
    if engine_name not in ("io_uring", "iocp"):
        pytest.skip(f"the {engine_name} engine has no posted accepts")
    if policy == "iocp's":
        if engine_name != "io_uring":
            pytest.skip("the IOCP engine's own policy is the other case")
        from anyio_iocp._engines.io_uring.listener import UringListenerIO

        monkeypatch.setattr(UringListenerIO, "direct_while_posted", False)
        monkeypatch.setattr(UringListenerIO, "busy_wakeup_accepts", 1)
    iocp_rule = engine_name == "iocp" or policy == "iocp's"
    wakeup = 1 if iocp_rule else BACKLOG
    # any rate of connections counts as busy
    monkeypatch.setattr(accept_pool, "BUSY_GAP", 60.0)
    async with queued_connections(BACKLOG, CLIENTS) as queued:
        await accept(queued, CLIENTS)
        # caught up, busy: the wake-up only (IOCP)
        stats = anyio_iocp.statistics()
        assert stats.posted["accept"] == BACKLOG + wakeup
        assert stats.in_flight["accept"] == wakeup
        direct = stats.direct_calls["accept"]
        # two connections come; the wake-up takes the first, the direct
        # call the second (IOCP)
        for _ in range(2):
            queued.clients.append(await anyio.connect_tcp("127.0.0.1", queued.port))
        await wait_until_queued(queued.listener.extra(SocketAttribute.raw_socket), 2 - wakeup)
        await accept(queued, 2)
        if iocp_rule:
            assert anyio_iocp.statistics().direct_calls["accept"] == direct + 1
        # idle again after a quiet spell (no rate counts as busy now): the
        # pool in full
        monkeypatch.setattr(accept_pool, "BUSY_GAP", 0.0)
        queued.clients.append(await anyio.connect_tcp("127.0.0.1", queued.port))
        await accept(queued, 1)
        if iocp_rule:
            # (io_uring's pool was posted in full all along, and is not
            # topped up after connections fewer than it)
            assert anyio_iocp.statistics().in_flight["accept"] == BACKLOG
        await assert_each_reaches_its_own_stream(queued)


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
    cls = listener_class(engine_name)
    post_failing_accept = (
        post_failing_ring_accept if engine_name == "io_uring" else post_failing_iocp_accept
    )

    def post_failing(listener: Any) -> Any:
        return post_failing_accept(listener, code)

    real_post_accept = cls._post_accept
    outrun: list[Any] = []

    def post_accept(listener: Any) -> Any:
        if outrun:
            return real_post_accept(listener)
        outrun.append(post_failing(listener))
        return outrun[-1]

    monkeypatch.setattr(cls, "_post_accept", post_accept)
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=1)
    listener = first_listener(multi)
    port = listener.extra(SocketAttribute.local_port)
    async with multi:
        await poll_until(lambda: outrun[0].done)
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            with anyio.fail_after(5):
                server = await listener.accept()
            async with server:
                await client.send(b"ping")
                assert await server.receive() == b"ping"
