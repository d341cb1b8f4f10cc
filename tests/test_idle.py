"""The listener setting idletimeout (iocpsock 0.2's watchdog): connections
reach accept() with their first bytes; silent ones are closed unseen."""

from __future__ import annotations

import gc
import socket
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketListener
from helpers import first_listener, open_fds, open_pair, open_sockets, peer_closed, poll_until

import anyio_iocp
from anyio_iocp import StatisticsAttribute, TuningAttribute
from anyio_iocp._face.runstate import current_engine
from anyio_iocp._interface.settings import Usage

pytestmark = pytest.mark.anyio


async def gated_listener(idletimeout: int) -> tuple[Any, SocketListener, int]:
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", idletimeout=idletimeout)
    listener = first_listener(multi)
    return multi, listener, listener.extra(SocketAttribute.local_port)


async def test_silent_connections_never_reach_accept() -> None:
    # a timeout far beyond the late sender's wait, on a slow machine too (the
    # silent ones are awaited for up to 5 s after it)
    multi, listener, port = await gated_listener(1000)
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    talker = socket.create_connection(("127.0.0.1", port))
    late = socket.create_connection(("127.0.0.1", port))  # silent for less than the timeout
    async with multi:
        talker.sendall(b"hello")
        with anyio.fail_after(5):
            stream = await listener.accept()
        assert await stream.receive() == b"hello"  # the first bytes come first
        await stream.send(b"hi")
        # (in a thread: send() may return before the bytes reach the kernel)
        assert await anyio.to_thread.run_sync(talker.recv, 2) == b"hi"
        await anyio.sleep(0.1)
        late.sendall(b"late but in time")
        with anyio.fail_after(5):
            second = await listener.accept()
        assert await second.receive(4) == b"late"  # max_bytes respected
        assert await second.receive() == b" but in time"
        # the statistics count the first bytes too, and ABD is the engine stream's
        counted = stream.extra(StatisticsAttribute.stream)
        assert (counted.bytes_in, counted.bytes_out) == (5, 2)
        assert second.extra(StatisticsAttribute.stream).bytes_in == len(b"late but in time")
        assert counted.recvburst_cap == stream.extra(TuningAttribute.recvburst).cap
        # an accept() waits while the silent connections time out, and a
        # moment after: they are closed, never handed over
        handed: list[Any] = []

        async def accept_one() -> None:
            handed.append(await listener.accept())

        async with anyio.create_task_group() as tg:
            tg.start_soon(accept_one)
            for sock in silent:
                assert await anyio.to_thread.run_sync(peer_closed, sock)
            await anyio.sleep(0.5)
            tg.cancel_scope.cancel()
        assert not handed, "silent connections are never handed over"
        assert listener._gate.expired == 3  # type: ignore[attr-defined]
        assert listener.extra(TuningAttribute.idletimeout) == Usage(1000, 0)
        await stream.aclose()
        await second.aclose()
    for sock in [*silent, talker, late]:
        sock.close()


async def test_peer_that_closes_without_sending_reads_end_of_stream() -> None:
    multi, listener, port = await gated_listener(5000)
    client = socket.create_connection(("127.0.0.1", port))
    client.close()
    async with multi:
        with anyio.fail_after(5):
            stream = await listener.accept()
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()
        await stream.aclose()


async def test_closing_the_listener_closes_connections_waiting() -> None:
    current_engine()
    gc.collect()
    fds, sockets = open_fds(), open_sockets()
    multi, listener, port = await gated_listener(60_000)
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.accept)  # starts the gate; all four wait for first bytes
        await poll_until(lambda: listener.extra(TuningAttribute.idletimeout).in_use >= 4)
        tg.cancel_scope.cancel()
    assert listener.extra(TuningAttribute.idletimeout) == Usage(60_000, 4)
    await multi.aclose()
    for client in clients:
        assert await anyio.to_thread.run_sync(peer_closed, client)
        client.close()
    gc.collect()
    assert open_fds() == fds
    assert open_sockets() == sockets


async def test_turned_off_on_a_live_listener() -> None:
    multi, listener, port = await gated_listener(60_000)
    async with multi:
        with anyio.move_on_after(0.05):
            await listener.accept()
        anyio_iocp.configure(listener, idletimeout=0)
        client = socket.create_connection(("127.0.0.1", port))
        with anyio.fail_after(5):
            stream = await listener.accept()  # handed over without a byte sent
        client.sendall(b"x")
        assert await stream.receive() == b"x"
        await stream.aclose()
        client.close()


async def test_off_by_default_and_validated() -> None:
    listener, client, server = await open_pair()
    async with listener, client, server:
        assert listener.extra(TuningAttribute.idletimeout) == Usage(0, 0)
        with pytest.raises(ValueError, match="idletimeout must be from 0 to 86400000, got -1"):
            anyio_iocp.configure(listener, idletimeout=-1)
        with pytest.raises(TypeError, match="idletimeout must be an integer"):
            anyio_iocp.configure(listener, idletimeout=0.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="'idletimeout' is not a setting of a stream"):
            anyio_iocp.configure(client, idletimeout=100)
        assert listener.extra(TuningAttribute.idletimeout) == Usage(0, 0)
    with pytest.raises(TypeError, match="idletimeout is a listener setting"):
        await anyio_iocp.connect_tcp("127.0.0.1", 1, idletimeout=5)
    with pytest.raises(ValueError, match="idletimeout must be from 0"):
        await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", idletimeout=86_400_001)


async def test_closing_the_listener_survives_a_failing_close_of_a_ready_connection() -> None:
    """A connection whose first bytes came, not yet accepted, whose close
    fails as the listener closes: the listener's close still returns, and the
    others are closed (before, the gate's task ended without saying it was
    done, and ``aclose()`` waited for ever)."""
    multi, listener, port = await gated_listener(60_000)
    first = socket.create_connection(("127.0.0.1", port))
    first.sendall(b"first")
    async with await listener.accept():  # starts the gate
        pass
    ready = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    for client in ready:
        client.sendall(b"hello")
    gate = listener._gate  # type: ignore[attr-defined]
    await poll_until(lambda: len(gate._ready) >= 2)
    failing = gate._ready[0]
    real_close = failing.close

    async def close_that_fails() -> None:
        raise OSError("the close failed")

    failing.close = close_that_fails
    with anyio.fail_after(5):
        await multi.aclose()
    failing_port = failing.sock.getpeername()[1]
    (other,) = [client for client in ready if client.getsockname()[1] != failing_port]
    assert await anyio.to_thread.run_sync(peer_closed, other)
    await real_close()
    for client in (first, *ready):
        client.close()
