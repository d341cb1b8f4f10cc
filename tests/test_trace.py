"""The trace (docs/observability.md): each event kind provoked and seen.

Kinds provoked elsewhere, where the situation is already built: the accept
back-off in ``test_exhaustion.py``, the completion-ring overflow and the
submission retry in ``test_ring_limits.py``.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute
from helpers import after_a_burst, first_listener, open_pair, recv_exactly

import anyio_iocp
from anyio_iocp import TraceEvent
from anyio_iocp._face import engines as face_engines
from anyio_iocp._flow.accept_backoff import AcceptBackoff
from anyio_iocp._interface import trace as _trace
from anyio_iocp._interface.stats import EngineCounters

pytestmark = pytest.mark.anyio

COMPLETION_ENGINES = ("io_uring", "iocp")


def kinds(events: list[TraceEvent]) -> list[str]:
    return [event.kind for event in events]


def of_kind(events: list[TraceEvent], kind: str) -> list[TraceEvent]:
    return [event for event in events if event.kind == kind]


def test_every_kind_has_a_level_and_a_description() -> None:
    for kind, (level, what) in _trace.KINDS.items():
        assert level in (logging.DEBUG, logging.INFO, logging.WARNING), kind
        assert what, kind
        assert "." in kind


def test_off_by_default_and_switched_by_the_functions() -> None:
    events: list[TraceEvent] = []
    assert not anyio_iocp.trace_enabled()
    anyio_iocp.enable_trace(events.append)
    try:
        assert anyio_iocp.trace_enabled()
    finally:
        anyio_iocp.disable_trace()
    assert not anyio_iocp.trace_enabled()
    with pytest.raises(TypeError, match="callback must be callable"):
        anyio_iocp.enable_trace(42)  # type: ignore[arg-type]


def test_bad_environment_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_trace.TRACE_ENV, "yes")
    with pytest.raises(ValueError, match=r"ANYIO_IOCP_TRACE='yes': expected '0' \(off\) or '1'"):
        _trace._from_environment()


async def test_engine_selected_and_set_up(trace_events: list[TraceEvent], engine_name: str) -> None:
    listener, client, server = await open_pair()
    async with listener, client, server:
        pass
    (selected,) = of_kind(trace_events, "engine.selected")
    assert selected.fields["engine"] == engine_name
    assert selected.fields["reason"] == anyio_iocp.engine_info().reason
    setups = of_kind(trace_events, "engine.setup")
    if engine_name == "io_uring":
        assert setups[0].fields["sq_entries"] > 0
        assert setups[0].fields["cq_entries"] >= setups[0].fields["sq_entries"]
    # the selection and the set-up come first, before anything of a stream
    if engine_name in COMPLETION_ENGINES:
        assert kinds(trace_events)[:2] == ["engine.selected", "engine.setup"]
        assert len(setups) == 1
    else:
        assert kinds(trace_events)[0] == "engine.selected"
        assert setups == []


@pytest.mark.skipif(sys.platform == "win32", reason="the io_uring probe is Linux's")
def test_fallback_to_readiness_says_why(
    trace_events: list[TraceEvent],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.delenv("ANYIO_IOCP_ENGINE", raising=False)
    monkeypatch.setattr(
        face_engines, "probe_io_uring", lambda: (False, "refused by the test's fake probe", ())
    )
    caplog.set_level(logging.WARNING, logger="anyio_iocp.trace")

    async def main() -> str:
        listener, client, server = await open_pair()
        async with listener, client, server:
            return anyio_iocp.engine_info().name

    assert anyio.run(main, backend="iocp") == "readiness"
    (fallback,) = of_kind(trace_events, "engine.fallback")
    assert fallback.fields["reason"] == "io_uring unavailable: refused by the test's fake probe"
    assert fallback.level == logging.WARNING
    # the same event reached the logging hierarchy, at its level
    records = [r for r in caplog.records if r.name == "anyio_iocp.trace.engine"]
    assert [r.trace_event for r in records] == [fallback]  # type: ignore[attr-defined]


def test_a_forced_readiness_engine_is_no_fallback(trace_events: list[TraceEvent]) -> None:
    async def main() -> None:
        listener, client, server = await open_pair()
        async with listener, client, server:
            pass

    anyio.run(main, backend="iocp", backend_options={"engine": "readiness"})
    assert of_kind(trace_events, "engine.selected")
    assert of_kind(trace_events, "engine.fallback") == []


async def test_abd_moves_are_traced(trace_events: list[TraceEvent]) -> None:
    """A bulk transfer into a stream with recvburst 8 and 1 KiB buffers: ABD
    raises k on full receives; every move is an event of the server stream."""
    async with after_a_burst(recvburst=8, buffersize=1024) as server:
        server_fd = server.extra(SocketAttribute.raw_socket).fileno()
    moves = of_kind(trace_events, "abd.pool")
    assert moves, "a bulk transfer must move the receive pool"
    assert {event.fields["fd"] for event in moves} == {server_fd}
    assert all(1 <= event.fields["k"] <= 8 and event.fields["cap"] == 8 for event in moves)
    assert max(event.fields["k"] for event in moves) > 2
    # each event is one step, up on a full receive, down on a partial one
    k = 1
    for event in moves:
        assert event.fields["k"] == k + (1 if event.fields["full"] else -1)
        k = event.fields["k"]


async def test_accept_pool_refills_are_traced(
    trace_events: list[TraceEvent], engine_name: str
) -> None:
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=5)
    listener = first_listener(multi)
    port = listener.extra(SocketAttribute.local_port)
    async with multi:
        client = await anyio.connect_tcp("127.0.0.1", port)
        server = await listener.accept()
        await client.aclose()
        await server.aclose()
        fd = listener.extra(SocketAttribute.raw_socket).fileno()
    refills = of_kind(trace_events, "accept.refill")
    if engine_name not in COMPLETION_ENGINES:
        assert refills == []  # the readiness engine posts no accepts
        return
    assert refills[0].fields == {"fd": fd, "posted": 5, "pool": 5, "queued": 0, "backlog": 5}
    # the other 4 are still posted, so none is posted in place of the one
    # taken (the pool is posted again once idle: test_busy_listener.py)
    assert len(refills) == 1


def test_accept_backoff_and_resume_are_traced(trace_events: list[TraceEvent]) -> None:
    """The back-off object of every listener: a pause is an event (and a
    count), the failures during it are not; the end of the shortage is one.
    (A real EMFILE storm: test_exhaustion.py.)"""
    counters = EngineCounters()
    backoff = AcceptBackoff("listener ('127.0.0.1', 1)", counters)
    backoff.failed(errno.EMFILE)
    backoff.failed(errno.EMFILE)  # during the pause: the same attempt
    backoff.succeeded()
    assert kinds(trace_events) == ["accept.backoff", "accept.resumed"]
    pause, resumed = trace_events
    assert pause.fields["errno"] == "EMFILE"
    assert pause.fields["delay"] > 0
    assert resumed.fields["failures"] == 2
    assert counters.accept_backoffs == 1


async def test_write_behind_sends_are_traced(
    trace_events: list[TraceEvent], engine_name: str
) -> None:
    """sendcap 4 and a peer that does not read yet: sends that do not fit
    the socket are queued (send() returns), and complete once it reads."""
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1")
    listener = first_listener(multi)
    port = listener.extra(SocketAttribute.local_port)
    client = await anyio_iocp.connect_tcp("127.0.0.1", port, sendcap=4)
    server = await listener.accept()
    # a small send buffer: what the peer does not read soon fills the socket
    client.extra(SocketAttribute.raw_socket).setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    chunk = b"w" * (1 << 20)
    async with multi, client, server:
        for _ in range(3):
            await client.send(chunk)  # returns with the bytes queued
        queued = of_kind(trace_events, "send.queued")
        client_fd = client.extra(SocketAttribute.raw_socket).fileno()
        assert queued, "3 MiB to a peer that does not read must queue"
        assert all(e.fields["fd"] == client_fd and e.fields["sendcap"] == 4 for e in queued)
        assert 1 <= max(e.fields["pending"] for e in queued) <= 4
        assert await recv_exactly(server, 3 * len(chunk)) == chunk * 3
        with anyio.fail_after(10):
            while len(of_kind(trace_events, "send.completed")) < len(queued):
                await anyio.sleep(0.01)
        stats = client.extra(anyio_iocp.StatisticsAttribute.stream)
        assert stats.sends_queued == len(queued)
    completed = of_kind(trace_events, "send.completed")
    assert all(e.fields["fd"] == client_fd and e.fields["result"] > 0 for e in completed)


def test_leftovers_and_the_end_of_a_run_are_traced(
    trace_events: list[TraceEvent], engine_name: str
) -> None:
    """A run that ends with a listener never closed (and, on a completion
    engine, its posted accepts still in flight)."""

    async def main() -> None:
        multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=3)
        leaked.append(multi)

    leaked: list[Any] = []
    anyio.run(main, backend="iocp", backend_options={"engine": engine_name})
    left = of_kind(trace_events, "run.leftovers")
    never_closed = [e for e in left if "listeners" in e.fields]
    assert [e.fields for e in never_closed] == [{"streams": 0, "listeners": 1}]
    in_flight = [e for e in left if "operations" in e.fields]
    if engine_name in COMPLETION_ENGINES:
        assert [e.fields["operations"] for e in in_flight] == [{"accept": 3}]
    else:
        assert in_flight == []
    (end,) = of_kind(trace_events, "run.end")
    assert end.fields["engine"] == engine_name
    assert end.fields["listeners"] == 1
    assert kinds(trace_events)[-1] == "run.end"


def test_a_failing_callback_is_logged_and_the_run_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken(event: TraceEvent) -> None:
        calls.append(event.kind)
        raise RuntimeError("broken callback")

    async def main() -> bytes:
        listener, client, server = await open_pair()
        async with listener, client, server:
            await client.send(b"still works")
            return await recv_exactly(server, 11)

    anyio_iocp.enable_trace(broken)
    try:
        assert anyio.run(main, backend="iocp") == b"still works"
        first_run = len(calls)
        assert first_run > 0
        # still registered: the next run calls it again
        assert anyio.run(main, backend="iocp") == b"still works"
        assert len(calls) == 2 * first_run
    finally:
        anyio_iocp.disable_trace()
    assert any("trace callback" in r.getMessage() for r in caplog.records)


def test_every_kind_is_provoked_by_a_test() -> None:
    """A kind added to the catalogue without a test that provokes it fails here."""
    texts = "".join(path.read_text() for path in Path(__file__).parent.glob("test_*.py"))
    missing = [kind for kind in _trace.KINDS if f'"{kind}"' not in texts]
    assert missing == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="io_uring is Linux's")
def test_io_uring_fallbacks_are_traced(
    trace_events: list[TraceEvent], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ways a ring gets less than the machine offers: the big ring
    refuses COOP_TASKRUN that the probe's small ring took, and a kernel
    without capped multishot receives."""
    pytest.importorskip(
        "anyio_iocp._engines.io_uring._uring", reason="the io_uring shim is not built"
    )
    from anyio_iocp._engines.io_uring import engine as _uring_engine

    usable, reason, details = face_engines.probe_io_uring()
    if not usable:
        pytest.skip(reason)
    from anyio_iocp._engines.io_uring._uring import lib as real_lib

    class RefusingCoop:
        """The shim, except that a ring with COOP_TASKRUN is refused (EINVAL)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(real_lib, name)

        def iou_open(self, ring: Any, entries: int, cq_entries: int, flags: int) -> int:
            if flags & real_lib.IORING_SETUP_COOP_TASKRUN:
                return -errno.EINVAL
            return int(real_lib.iou_open(ring, entries, cq_entries, flags))

    without_multishot = tuple(
        (name, False if name == "multishot_recv" else value) for name, value in details
    )
    with_coop = tuple(
        (name, True if name == "coop_taskrun" else value) for name, value in without_multishot
    )
    monkeypatch.setattr(face_engines, "probe_io_uring", lambda: (True, reason, with_coop))
    monkeypatch.setattr(_uring_engine, "lib", RefusingCoop())

    async def main() -> None:
        listener, client, server = await open_pair()
        async with listener, client, server:
            await client.send(b"x")
            assert await recv_exactly(server, 1) == b"x"

    anyio.run(main, backend="iocp", backend_options={"engine": "io_uring"})
    fallbacks = of_kind(trace_events, "engine.fallback")
    assert [e.fields for e in fallbacks] == [
        {"flag": "COOP_TASKRUN"},
        {"feature": "multishot_recv"},
    ]
    (setup,) = of_kind(trace_events, "engine.setup")
    assert setup.fields["coop_taskrun"] is False
    assert setup.fields["receives"] == "single"
