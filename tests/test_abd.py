"""Automatic Burst Detection as one object (``anyio_iocp._flow.abd``), without
a socket's traffic: every step of ``k`` is checked against the rule."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

import anyio_iocp
from anyio_iocp._flow.abd import BurstDetector
from anyio_iocp._interface.stats import EngineCounters


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    with socket.socket() as s:
        yield s


def detector(sock: socket.socket, cap: int) -> tuple[BurstDetector, EngineCounters]:
    counters = EngineCounters()
    return BurstDetector(sock, counters, cap), counters


def test_full_receives_grow_k_by_one_up_to_the_cap(sock: socket.socket) -> None:
    abd, counters = detector(sock, 4)
    seen = []
    for _ in range(6):
        abd.observe(True)
        seen.append(abd.k)
    assert seen == [2, 3, 4, 4, 4, 4]
    assert abd.peak == 4
    assert abd.changes == 3  # moves only: the cap stops the count too
    assert counters.abd_changes == 3
    assert counters.abd_sizes == {2: 1, 3: 1, 4: 1}


def test_partial_receives_shrink_k_by_one_down_to_one(sock: socket.socket) -> None:
    abd, _ = detector(sock, 8)
    for _ in range(5):
        abd.observe(True)
    assert abd.k == 6
    seen = []
    for _ in range(7):
        abd.observe(False)
        seen.append(abd.k)
    assert seen == [5, 4, 3, 2, 1, 1, 1]
    assert abd.peak == 6
    assert abd.changes == 10


def test_a_burst_is_under_way_only_after_a_full_receive_with_k_above_one(
    sock: socket.socket,
) -> None:
    abd, _ = detector(sock, 1)
    abd.observe(True)
    assert abd.bursting and abd.k == 1
    assert not abd.in_burst()  # a cap of 1: nothing to post ahead

    abd, _ = detector(sock, 3)
    assert not abd.in_burst()
    abd.observe(True)
    assert abd.in_burst()
    abd.observe(False)  # k back to 1 and the last receive was partial
    assert not abd.in_burst()
    abd.observe(True)
    abd.observe(True)
    abd.observe(False)
    assert abd.k == 2 and not abd.in_burst()  # k > 1, but the burst has ended


def test_a_lower_cap_takes_k_down_with_it(sock: socket.socket) -> None:
    abd, _ = detector(sock, 10)
    for _ in range(9):
        abd.observe(True)
    assert abd.k == 10
    abd.set_cap(3)
    assert (abd.k, abd.cap) == (3, 3)
    abd.set_cap(20)
    assert abd.k == 3  # a higher cap does not raise k: only full receives do
    abd.observe(True)
    assert abd.k == 4


def test_every_move_is_traced_with_its_cause(sock: socket.socket) -> None:
    events: list[anyio_iocp.TraceEvent] = []
    abd, _ = detector(sock, 2)
    anyio_iocp.enable_trace(events.append)
    try:
        abd.observe(True)  # 1 -> 2
        abd.observe(True)  # at the cap: no move, no event
        abd.observe(False)  # 2 -> 1
        abd.observe(False)  # at 1: no move
    finally:
        anyio_iocp.disable_trace()
    moves = [(e.fields["k"], e.fields["full"]) for e in events if e.kind == "abd.pool"]
    assert moves == [(2, True), (1, False)]
