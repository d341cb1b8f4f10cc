"""Streams and listeners that the program drops without ``aclose()`` are
closed while the run goes on (``anyio_iocp/_interface/leftovers.py``), as Trio
closes a dropped socket when it is collected: the peer sees the end of the
stream, write-behind bytes still go out first, and a dropped listener stops
listening.  Before, they stayed open until the end of the run."""

from __future__ import annotations

import gc
import socket

import anyio
import pytest
from anyio.abc import SocketAttribute
from helpers import first_listener, open_sockets

import anyio_iocp

pytestmark = pytest.mark.anyio

#: how long the run may take to close what was dropped
CLOSE_WITHIN = 5.0


def read_to_eof(sock: socket.socket) -> bytes:
    """Everything ``sock`` receives until the peer's end of stream (blocking;
    a timeout fails the test)."""
    sock.settimeout(CLOSE_WITHIN)
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


async def wait_for_sockets(count: int) -> None:
    with anyio.move_on_after(CLOSE_WITHIN):
        while open_sockets() != count:
            await anyio.sleep(0.01)
    assert open_sockets() == count


async def test_a_dropped_stream_is_closed_during_the_run(engine_name: str) -> None:
    """An accepted stream with receives posted (a cancelled receive leaves
    them posted) is dropped: its peer sees the end of the stream while the
    run goes on, and its socket is closed."""
    async with await anyio_iocp.create_tcp_listener(local_host="127.0.0.1") as multi:
        listener = first_listener(multi)
        port = listener.extra(SocketAttribute.local_port)
        with await anyio.to_thread.run_sync(socket.create_connection, ("127.0.0.1", port)) as peer:
            stream = await listener.accept()
            with anyio.move_on_after(0.05):
                await stream.receive()  # nothing comes: receives stay posted
            before = open_sockets()
            del stream
            gc.collect()
            assert await anyio.to_thread.run_sync(read_to_eof, peer) == b""
            await wait_for_sockets(before - 1)


async def test_a_dropped_stream_sends_its_write_behind_bytes_first(engine_name: str) -> None:
    """Bytes a dropped stream had queued (write-behind sends, more than the
    socket buffers hold while the peer is not reading) all reach the peer, in
    order, before the end of the stream: it is closed as aclose() would."""
    payload = bytes(range(256)) * (40 * 1024)  # 10 MiB
    chunk = 512 * 1024
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        stream = await anyio_iocp.connect_tcp("127.0.0.1", port, sendcap=20)
        peer, _ = await anyio.to_thread.run_sync(server.accept)
        with peer:
            for start in range(0, len(payload), chunk):
                await stream.send(payload[start : start + chunk])
            del stream
            gc.collect()
            received = await anyio.to_thread.run_sync(read_to_eof, peer)
    assert len(received) == len(payload)
    assert received == payload


async def test_a_dropped_listener_stops_listening_during_the_run(engine_name: str) -> None:
    """A dropped listener, with its accepts posted ahead, is closed while the
    run goes on: its port is free to bind again (nothing holds the listening
    socket any more), and its sockets (on IOCP, the one of each posted
    accept) are closed."""
    before = open_sockets()
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=8)
    port = first_listener(multi).extra(SocketAttribute.local_port)
    await anyio.sleep(0.01)  # the pool is posted
    del multi
    gc.collect()
    await wait_for_sockets(before)
    # (binding, not connecting: a connect to a free port in the ephemeral
    # range can, rarely, connect the socket to itself)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


async def test_a_closed_stream_is_not_closed_again(engine_name: str) -> None:
    """aclose() first, then dropped: nothing more happens (the run's count of
    dropped objects it closed stays at zero), and a stream dropped during the
    run is counted once."""
    from anyio_iocp._face.runstate import current_state

    leftovers = current_state().leftovers
    async with await anyio_iocp.create_tcp_listener(local_host="127.0.0.1") as multi:
        listener = first_listener(multi)
        port = listener.extra(SocketAttribute.local_port)
        client = await anyio_iocp.connect_tcp("127.0.0.1", port)
        server = await listener.accept()
        await client.aclose()
        del client
        gc.collect()
        await anyio.sleep(0.05)
        assert leftovers.dropped_closed == 0
        del server
        gc.collect()
        with anyio.move_on_after(CLOSE_WITHIN):
            while leftovers.dropped_closed == 0:
                await anyio.sleep(0.01)
        await anyio.sleep(0.05)
        assert leftovers.dropped_closed == 1


async def test_a_failing_close_of_a_dropped_stream_ends_neither_run_nor_socket(
    engine_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A close that fails with something other than an OSError (a bug) is
    logged, the socket is closed anyway, and the run goes on: the close runs
    in a system task, whose error would otherwise end the program's run."""
    async with await anyio_iocp.create_tcp_listener(local_host="127.0.0.1") as multi:
        listener = first_listener(multi)
        port = listener.extra(SocketAttribute.local_port)
        with await anyio.to_thread.run_sync(socket.create_connection, ("127.0.0.1", port)) as peer:
            stream = await listener.accept()
            io = stream._io  # type: ignore[attr-defined]

            async def failing_close() -> None:
                raise RuntimeError("a bug in close()")

            io.close = failing_close
            before = open_sockets()
            del stream
            gc.collect()
            assert await anyio.to_thread.run_sync(read_to_eof, peer) == b""
            await wait_for_sockets(before - 1)
            del io
    assert "closing a dropped stream or listener failed" in caplog.text
    await anyio.sleep(0)  # the run goes on
