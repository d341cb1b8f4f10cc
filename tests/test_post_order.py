"""IOCP: every step that can fail comes before an operation is posted
(``IocpEngine.enter``).  A receive or a send whose bookkeeping runs out of
memory (its count, its entry in the engine's table, its place in the
stream's list) posts nothing: no operation is left that nobody holds, bytes
that arrive later go to the next receive, and a send the caller is told
failed has sent nothing.  Runs under Wine (``scripts/wine_test.sh``)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from helpers import (
    AppendFails,
    SetItemFails,
    fail_count_once,
    read_to_eof,
    recv_exactly,
    stream_and_peer,
)

from anyio_iocp._face.runstate import current_engine

pytestmark = pytest.mark.anyio

#: every 4-byte word numbered: a lost or repeated piece shows
PAYLOAD = b"".join(i.to_bytes(4, "big") for i in range(4096))
WHERE = ["count", "table", "list"]


def fail_once(where: str, kind: str, io: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next ``kind`` operation's bookkeeping fails at ``where``."""
    engine: Any = current_engine()
    if where == "count":
        fail_count_once(monkeypatch, kind)
    elif where == "table":
        monkeypatch.setattr(engine, "_ops", SetItemFails(engine._ops))
    else:
        name = "_posted" if kind == "recv" else "_sending"
        monkeypatch.setattr(io, name, AppendFails(getattr(io, name)))


def operations_of(sock: socket.socket, kind: str) -> list[Any]:
    engine: Any = current_engine()
    return [op for op in engine._ops.values() if op.sock is sock and op.kind == kind]


async def fails_leaving_nothing(
    io: Any, where: str, kind: str, call: Callable[[], Awaitable[object]], monkeypatch: Any
) -> None:
    """``call`` posts a ``kind`` operation whose bookkeeping fails at ``where``:
    it raises MemoryError, and neither the engine nor the stream holds an
    operation of that kind afterwards, nor counts one."""
    counted = dict(current_engine().counters.posted)
    fail_once(where, kind, io, monkeypatch)
    with anyio.fail_after(5), pytest.raises(MemoryError):
        await call()
    assert operations_of(io.sock, kind) == []  # nothing posted that nobody holds
    assert list(io._posted if kind == "recv" else io._sending) == []
    assert dict(current_engine().counters.posted) == counted


@pytest.mark.parametrize("where", WHERE)
async def test_a_receive_that_cannot_be_entered_posts_nothing_and_loses_nothing(
    engine_name: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stream_and_peer(engine_name, "iocp") as (stream, peer):
        # nothing there yet: the receive posts, and that fails
        await fails_leaving_nothing(stream._io, where, "recv", stream.receive, monkeypatch)
        peer.sendall(PAYLOAD)
        with anyio.fail_after(10):  # (a receive posted and forgotten would hang here)
            assert await recv_exactly(stream, len(PAYLOAD)) == PAYLOAD


@pytest.mark.parametrize("sendcap", [1, 2])  # waited for; write-behind
@pytest.mark.parametrize("where", WHERE)
async def test_a_send_that_cannot_be_entered_sends_nothing(
    engine_name: str, where: str, sendcap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with stream_and_peer(engine_name, "iocp", sendcap) as (stream, peer):
        io = stream._io
        # every send posts a WSASend (the direct send would take these bytes first)
        monkeypatch.setattr(io, "_send_now", lambda data: 0)
        await fails_leaving_nothing(
            io, where, "send", lambda: stream.send(b"not sent"), monkeypatch
        )
        with anyio.fail_after(5):
            await stream.send(PAYLOAD)
        await stream.send_eof()
        assert read_to_eof(peer) == PAYLOAD  # no "not sent" in front of it


async def test_a_receive_that_fails_after_its_call_stays_posted_and_listed(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What fails once ``WSARecv`` has queued its packet (here, reading the
    call's error code) leaves the receive where it is: the stream still
    lists it, and its bytes come to the next ``receive()``."""
    async with stream_and_peer(engine_name, "iocp") as (stream, peer):
        io = stream._io
        from anyio_iocp._engines.iocp import engine as iocp_engine

        def no_memory() -> int:
            monkeypatch.undo()
            raise MemoryError("the error code could not be read")

        monkeypatch.setattr(iocp_engine, "last_error", no_memory)
        with anyio.fail_after(5), pytest.raises(MemoryError):
            await stream.receive()
        (op,) = operations_of(io.sock, "recv")
        assert list(io._posted) == [op]
        peer.sendall(PAYLOAD)
        with anyio.fail_after(10):
            assert await recv_exactly(stream, len(PAYLOAD)) == PAYLOAD


async def test_a_send_whose_call_fails_at_once_leaves_nothing(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``WSASend`` that fails at once (the socket was shut down for
    sending) queues no packet: its entry, its count and its place in the
    stream's list are taken out again, and the error is raised."""
    async with stream_and_peer(engine_name, "iocp") as (stream, _peer):
        io = stream._io
        monkeypatch.setattr(io, "_send_now", lambda data: 0)
        io.sock.shutdown(socket.SHUT_WR)
        counted = dict(current_engine().counters.posted)
        with anyio.fail_after(5), pytest.raises((OSError, anyio.BrokenResourceError)):
            await stream.send(b"after the shutdown")
        assert operations_of(io.sock, "send") == []
        assert list(io._sending) == []
        assert dict(current_engine().counters.posted) == counted
