"""A direct look during a burst reads several buffers in one call (the
receive pool's ``burst_read_buffers``: four on IOCP, one on io_uring), on a
real connection: the bytes come in order, one buffer per ``receive()``, in as
many calls as the engine's setting makes, and a cancelled ``receive()`` loses
none of the buffers read ahead.  The readiness engine's own read-ahead hands
the pieces left after a cut out together."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from helpers import arrived, first_listener, recv_exactly

import anyio_iocp

pytestmark = pytest.mark.anyio

BUFFERSIZE = 512
BUFFERS = 64
#: every 4-byte word numbered: a buffer swapped, lost or repeated shows
PAYLOAD = b"".join(i.to_bytes(4, "big") for i in range(BUFFERSIZE * BUFFERS // 4))


def direct_recvs() -> int:
    return anyio_iocp.statistics().direct_calls["recv"]


def read_four_on_io_uring(monkeypatch: pytest.MonkeyPatch) -> None:
    """io_uring's streams with the IOCP engine's setting (the engine's module
    is not importable on Windows, where the engine is IOCP's anyway)."""
    if sys.platform != "win32":
        from anyio_iocp._engines.io_uring.stream import UringStreamIO

        monkeypatch.setattr(UringStreamIO, "burst_read_buffers", 4)


def stream_io(stream: SocketStream) -> Any:
    return stream._io  # type: ignore[attr-defined]


async def a_burst_held(engine_name: str) -> tuple[Any, SocketStream, SocketStream]:
    if engine_name == "readiness":
        pytest.skip("the readiness engine reads with its own loop, not the receive pool")
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", buffersize=BUFFERSIZE)
    listener = first_listener(multi)
    client = await anyio.connect_tcp("127.0.0.1", listener.extra(SocketAttribute.local_port))
    server = await listener.accept()
    await client.send(PAYLOAD)
    await arrived(server, len(PAYLOAD))
    return multi, client, server


@pytest.mark.parametrize("policy", ["engine's", "four"])
async def test_a_burst_is_read_in_as_many_calls_as_the_engine_says(
    engine_name: str, policy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first read fills its buffer: a burst.  From then on each direct
    call reads ``burst_read_buffers`` buffers, handed out one per receive."""
    if policy == "four":
        if engine_name == "iocp":
            pytest.skip("four is the IOCP engine's own setting")
        read_four_on_io_uring(monkeypatch)
    multi, client, server = await a_burst_held(engine_name)
    async with multi, client, server:
        per_call = type(stream_io(server)).burst_read_buffers
        assert per_call == (4 if engine_name == "iocp" or policy == "four" else 1)
        before = direct_recvs()
        with anyio.fail_after(10):  # (a lost byte must fail, not hang)
            received = [await server.receive() for _ in range(BUFFERS)]
        assert all(len(piece) == BUFFERSIZE for piece in received)
        assert b"".join(received) == PAYLOAD
        # one call for the first buffer, then per_call buffers per call
        assert direct_recvs() - before == 1 + -(-(BUFFERS - 1) // per_call)


async def test_a_cancelled_receive_loses_no_buffer_read_ahead(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_four_on_io_uring(monkeypatch)
    multi, client, server = await a_burst_held(engine_name)
    async with multi, client, server:
        received = [await server.receive(), await server.receive()]  # three buffers wait
        assert stream_io(server).usage("buffersize").in_use == 3 * BUFFERSIZE
        with anyio.CancelScope() as scope:
            scope.cancel()
            received.append(await server.receive())
        assert scope.cancelled_caught
        with anyio.fail_after(10):  # (a lost byte must fail, not hang)
            received.append(await recv_exactly(server, len(PAYLOAD) - sum(map(len, received))))
        assert b"".join(received) == PAYLOAD


async def test_a_readiness_burst_hands_a_cut_buffers_tail_out_with_the_next(
    engine_name: str,
) -> None:
    """The readiness engine reads a burst ahead in whole buffers (its own
    loop).  A receive that cut a buffer leaves its tail; the next receive
    hands that tail out together with the short buffer after it, in order
    and without another system call (read_ahead.take_ready)."""
    if engine_name != "readiness":
        pytest.skip("the readiness engine's own read-ahead loop")
    payload = PAYLOAD[: 3 * BUFFERSIZE + 100]
    multi = await anyio_iocp.create_tcp_listener(
        local_host="127.0.0.1", buffersize=BUFFERSIZE, recvburst=4
    )
    listener = first_listener(multi)
    client = await anyio.connect_tcp("127.0.0.1", listener.extra(SocketAttribute.local_port))
    server = await listener.accept()
    async with multi, client, server:
        await client.send(payload)
        await arrived(server, len(payload))
        before = direct_recvs()
        with anyio.fail_after(10):
            # full: a burst, so the engine reads 512, 512 and 100 bytes ahead
            pieces = [await server.receive(BUFFERSIZE)]
            assert direct_recvs() - before == 4
            pieces.append(await server.receive(BUFFERSIZE))
            pieces.append(await server.receive(400))  # cuts the third buffer
            pieces.append(await server.receive(BUFFERSIZE))  # its tail and the 100
        assert [len(p) for p in pieces] == [BUFFERSIZE, BUFFERSIZE, 400, BUFFERSIZE - 400 + 100]
        assert b"".join(pieces) == payload
        assert direct_recvs() - before == 4  # the last three came from the read-ahead
