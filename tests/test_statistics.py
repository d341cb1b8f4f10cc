"""Statistics (docs/observability.md): per-run and per-stream counters,
checked against what the test itself did."""

from __future__ import annotations

import json
import random

import anyio
import pytest
from anyio.abc import SocketAttribute
from helpers import after_a_burst, first_listener, recv_exactly

import anyio_iocp
from anyio_iocp import RunStatistics, StatisticsAttribute

pytestmark = pytest.mark.anyio

COMPLETION_ENGINES = ("io_uring", "iocp")


def test_outside_a_run_there_are_none() -> None:
    with pytest.raises(RuntimeError, match='needs a run of AnyIO\'s "iocp" backend'):
        anyio_iocp.statistics()


def echo_sizes() -> list[int]:
    rng = random.Random(11)
    return [rng.choice((1, 100, 1500, 9000, 70000)) for _ in range(40)]


async def test_bytes_calls_and_operations_add_up(engine_name: str) -> None:
    """Two streams echo known sizes: every byte is counted once per side,
    every posted operation is either completed or in flight, and the
    counters of streams and listeners match what was opened."""
    sizes = echo_sizes()
    total = sum(sizes)
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=4)
    listener = first_listener(multi)
    port = listener.extra(SocketAttribute.local_port)
    client = await anyio.connect_tcp("127.0.0.1", port)
    server = await listener.accept()
    async with multi, client, server:

        async def echo() -> None:
            moved = 0
            while moved < total:
                data = await server.receive()
                await server.send(data)
                moved += len(data)

        async with anyio.create_task_group() as tg:
            tg.start_soon(echo)
            for size in sizes:
                payload = bytes([size % 251]) * size
                await client.send(payload)
                assert await recv_exactly(client, size) == payload

        mine = client.extra(StatisticsAttribute.stream)
        theirs = server.extra(StatisticsAttribute.stream)
        assert (mine.bytes_out, mine.bytes_in) == (total, total)
        assert (theirs.bytes_in, theirs.bytes_out) == (total, total)

        stats = anyio_iocp.statistics()
        assert stats.engine == engine_name
        assert (stats.bytes_in, stats.bytes_out) == (2 * total, 2 * total)
        assert (stats.streams, stats.listeners) == (2, 1)
        # in flight: only kinds that were posted, never more than posted
        assert set(stats.in_flight) <= set(stats.posted)
        assert all(n >= 0 for n in stats.completed.values())
        assert stats.ring_operations == sum(stats.posted.values())
        if engine_name in COMPLETION_ENGINES:
            # the pool of 4; none posted in place of the one taken while the
            # other 3 stay posted (the pool is posted again once idle)
            assert stats.posted["accept"] == 4
            assert stats.in_flight["accept"] == 3
        # connect() directly, on every engine: on loopback the handshake is
        # over when it returns, so nothing is posted or waited for
        assert "connect" not in stats.posted
        assert stats.direct_calls["connect"] == 1
        if engine_name in COMPLETION_ENGINES:
            assert stats.completions >= sum(stats.completed.values())
            assert stats.reaps >= 1
        else:
            assert stats.posted == {} and stats.completions == 0
            assert stats.waits >= 1  # the readiness engine's way of waiting
            assert stats.direct_calls["recv"] >= len(sizes)  # each receive is one
        assert stats.direct_calls["send"] >= 1
        # the one connection: a posted accept took it, or (readiness) accept4
        assert stats.direct_calls["accept"] == (0 if engine_name in COMPLETION_ENGINES else 1)
        assert stats.passes >= 1
        assert stats.accept_hits + stats.accept_waits == 1
    json.dumps(stats.as_dict())  # a tool can store it as it is


async def test_abd_history(engine_name: str) -> None:
    """A bulk transfer into 1 KiB buffers with recvburst 8: the stream's k
    rises, and the run's history of pool sizes records each move."""
    async with after_a_burst(recvburst=8, buffersize=1024) as server:
        stream = server.extra(StatisticsAttribute.stream)
        stats = anyio_iocp.statistics()
    assert stream.recvburst_cap == 8
    assert 2 < stream.recvburst_peak <= 8
    assert 1 <= stream.recvburst <= 8
    assert stream.recvburst_changes == stats.abd_changes > 0
    assert sum(stats.abd_sizes.values()) == stats.abd_changes
    assert max(stats.abd_sizes) == stream.recvburst_peak
    times = [t for t, _k in stats.abd_timeline]
    assert times == sorted(times)
    assert len(stats.abd_timeline) == min(stats.abd_changes, 256)


def test_finished_runs_keep_the_last_statistics(engine_name: str) -> None:
    async def main() -> RunStatistics:
        multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1")
        listener = first_listener(multi)
        client = await anyio.connect_tcp("127.0.0.1", listener.extra(SocketAttribute.local_port))
        server = await listener.accept()
        async with multi, client, server:
            await client.send(b"x" * 1000)
            await recv_exactly(server, 1000)
        return anyio_iocp.statistics()

    before = len(anyio_iocp.finished_runs())
    inside = anyio.run(main, backend="iocp", backend_options={"engine": engine_name})
    runs = anyio_iocp.finished_runs()
    assert len(runs) == min(before + 1, 64)
    last = runs[-1]
    assert last.engine == engine_name
    assert (last.bytes_in, last.bytes_out) == (1000, 1000) == (inside.bytes_in, inside.bytes_out)
    assert last.in_flight == {}  # the end of the run drained everything
    assert last.completed == last.posted
    summary = last.summary()
    assert summary.startswith(f"anyio-iocp run on {engine_name}:")
    assert "bytes in 1,000, out 1,000" in summary
