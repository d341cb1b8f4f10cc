"""UNIX stream sockets through the engines: streams, listeners, descriptor passing."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketAttribute, UNIXSocketStream
from helpers import recv_exactly

import anyio_iocp
from anyio_iocp import TuningAttribute
from anyio_iocp._face.runstate import current_engine
from anyio_iocp._streams.sockets import EngineTCPListener, EngineUNIXSocketStream

pytestmark = pytest.mark.anyio


def ops_in_flight() -> int:
    return len(getattr(current_engine(), "_ops", {}))


async def open_unix_pair(
    path: Path,
) -> tuple[anyio.abc.SocketListener, UNIXSocketStream, UNIXSocketStream]:
    listener = await anyio.create_unix_listener(path)
    assert isinstance(listener, EngineTCPListener)
    client = await anyio.connect_unix(path)
    server = await listener.accept()
    assert isinstance(server, EngineUNIXSocketStream)
    return listener, client, server


async def test_unix_stream_bulk_in_order(tmp_path: Path, engine_name: str) -> None:
    listener, client, server = await open_unix_pair(tmp_path / "s")
    assert isinstance(client, EngineUNIXSocketStream)
    assert client.extra(TuningAttribute.engine).name == engine_name
    assert client.extra(SocketAttribute.remote_address) == str(tmp_path / "s")
    payload = random.Random(1).randbytes(3 << 20)
    async with listener, client, server:

        async def sender() -> None:
            view = memoryview(payload)
            while view:
                size = random.randrange(1, 200_000)
                await client.send(bytes(view[:size]))
                view = view[size:]
            await client.send_eof()

        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)
            assert await recv_exactly(server, len(payload)) == payload
            with pytest.raises(anyio.EndOfStream):
                await server.receive()


async def test_send_and_receive_fds(tmp_path: Path, engine_name: str) -> None:
    listener, client, server = await open_unix_pair(tmp_path / "s")
    async with listener, client, server:
        r, w = os.pipe()
        try:
            got: list[tuple[bytes, list[int]]] = []

            async def receiver() -> None:
                got.append(await server.receive_fds(10, 4))

            async with anyio.create_task_group() as tg:
                tg.start_soon(receiver)
                await anyio.wait_all_tasks_blocked()
                if engine_name == "io_uring":
                    assert ops_in_flight() >= 1, "receive_fds waits on the ring"
                await client.send_fds(b"pipe", [r, w])
            ((message, fds),) = got
            assert message == b"pipe"
            assert len(fds) == 2 and not {r, w} & set(fds)
            os.write(fds[1], b"through the passed pipe")
            assert os.read(r, 100) == b"through the passed pipe"
            for fd in fds:
                os.close(fd)
        finally:
            os.close(r)
            os.close(w)


async def test_fds_keep_their_place_after_write_behind_bytes(
    tmp_path: Path, engine_name: str
) -> None:
    """With sendcap > 1, bytes handed over before send_fds go out before it."""
    listener, client, server = await open_unix_pair(tmp_path / "s")
    bulk = random.Random(2).randbytes(1 << 20)
    async with listener, client, server:
        client.extra(TuningAttribute.configure)(sendcap=8)
        r, w = os.pipe()
        try:

            async def sender() -> None:
                for i in range(0, len(bulk), 65536):
                    await client.send(bulk[i : i + 65536])
                await client.send_fds(b"F", [r])
                await client.send(b"after")

            async with anyio.create_task_group() as tg:
                tg.start_soon(sender)
                assert await recv_exactly(server, len(bulk)) == bulk
                message, fds = await server.receive_fds(1, 1)
                assert message == b"F" and len(fds) == 1
                os.close(fds[0])
                assert await recv_exactly(server, 5) == b"after"
        finally:
            os.close(r)
            os.close(w)


async def test_close_while_receiving_fds(tmp_path: Path, engine_name: str) -> None:
    listener, client, server = await open_unix_pair(tmp_path / "s")
    outcome: list[str] = []
    async with listener, client:

        async def receiver() -> None:
            try:
                await server.receive_fds(10, 1)
            except anyio.ClosedResourceError:
                outcome.append("closed")

        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver)
            await anyio.wait_all_tasks_blocked()
            await server.aclose()
    assert outcome == ["closed"]
    assert ops_in_flight() == 0


async def test_wrapped_socketpair_is_an_engine_stream(engine_name: str) -> None:
    left, right = socket.socketpair()
    async with (
        await UNIXSocketStream.from_socket(left) as a,
        await UNIXSocketStream.from_socket(right) as b,
    ):
        assert isinstance(a, EngineUNIXSocketStream)
        await a.send(b"over a socketpair")
        assert await recv_exactly(b, 17) == b"over a socketpair"


async def test_unix_listener_tuning_applies(tmp_path: Path, engine_name: str) -> None:
    with anyio_iocp.tuning(profile="ftpd"):
        listener = await anyio.create_unix_listener(tmp_path / "s")
    async with listener:
        assert listener.extra(TuningAttribute.backlog).cap == 10
        async with await anyio.connect_unix(tmp_path / "s"):
            stream = await listener.accept()
            async with stream:
                assert stream.extra(TuningAttribute.sendcap).cap == 20


async def test_fds_after_first_bytes_held_by_the_idle_gate(
    tmp_path: Path, engine_name: str
) -> None:
    """A gated UNIX listener (idletimeout) reads a connection's first bytes
    before accept() hands it over: receive_fds returns those first, and the
    descriptors after them, in order; send_fds goes out after write-behind
    bytes of the same stream, and every byte is counted."""
    with anyio_iocp.tuning(idletimeout=5000):
        listener = await anyio.create_unix_listener(tmp_path / "gated")
    client = await anyio.connect_unix(tmp_path / "gated")
    r, w = os.pipe()
    try:
        async with listener, client:
            await client.send(b"first")
            server = await listener.accept()
            assert isinstance(server, EngineUNIXSocketStream)
            async with server:
                await client.send_fds(b"F", [r])
                assert await server.receive_fds(5, 1) == (b"first", [])
                message, fds = await server.receive_fds(1, 1)
                assert message == b"F" and len(fds) == 1
                os.close(fds[0])
                server.extra(TuningAttribute.configure)(sendcap=8)

                async def sender() -> None:
                    await server.send(b"x" * 300_000)  # write-behind: may be queued
                    await server.send_fds(b"G", [r])  # after those bytes

                with anyio.fail_after(10):
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(sender)
                        assert await recv_exactly(client, 300_000) == b"x" * 300_000
                        message, fds = await client.receive_fds(1, 1)
                assert message == b"G" and len(fds) == 1
                os.close(fds[0])
                counted = server.extra(anyio_iocp.StatisticsAttribute.stream)
                assert (counted.bytes_in, counted.bytes_out) == (6, 300_001)
    finally:
        os.close(r)
        os.close(w)
