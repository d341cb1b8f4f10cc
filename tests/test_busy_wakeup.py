"""The accept pool's rule for an idle listener on an engine whose posted
accepts shut the direct call out (IOCP): busy since it was last idle (the
direct call found connections waiting, and connections were taken at least
one per BUSY_GAP on average), it posts one accept; otherwise the whole pool
(anyio_iocp._flow.accept_pool).  The pool's policy alone, on stand-in
accepts, a stand-in direct call and a clock the test moves."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import ClassVar

import pytest
import trio
from test_accept_shortage import StandInPool

from anyio_iocp._flow import accept_pool
from anyio_iocp._interface.settings import Tuning
from anyio_iocp._interface.stats import EngineCounters

BACKLOG = 4


class Clock:
    now = 100.0

    def perf_counter(self) -> float:
        return self.now


class Pool(StandInPool):
    """IOCP's flags; accepts are stand-in objects, the direct call takes
    from ``waiting`` (connections in the kernel's listen queue)."""

    direct_while_posted = False
    busy_wakeup_accepts: ClassVar[int | None] = 1

    def __init__(self, sock: socket.socket) -> None:
        self.waiting: list[socket.socket] = []
        self.made: list[object] = []
        super().__init__(sock, Tuning(backlog=BACKLOG), EngineCounters())

    def _post_accept(self) -> object:
        self.made.append(object())
        return self.made[-1]

    def _accept_now(self) -> socket.socket | None:
        return self.waiting.pop(0) if self.waiting else None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    moved = Clock()
    monkeypatch.setattr(accept_pool, "time", SimpleNamespace(perf_counter=moved.perf_counter))
    return moved


@pytest.fixture
def pool(clock: Clock) -> Iterator[Pool]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        made = Pool(sock)
        yield made
        for conn in [*made._queue, *made.waiting]:
            conn.close()


def connections(n: int) -> list[socket.socket]:
    return [socket.socket() for _ in range(n)]


def take(pool: Pool, n: int) -> None:
    """``n`` accept() calls, each finding a connection (queued, or taken by
    the direct call)."""

    async def main() -> None:
        for _ in range(n):
            with trio.fail_after(1):
                (await pool.accept()).close()

    trio.run(main)


def complete_posted(pool: Pool) -> None:
    """Every posted accept brings a connection."""
    for op in list(pool._posted):
        pool.accepted(op, socket.socket())


def busy_spell(pool: Pool, clock: Clock) -> None:
    """The pool's 4 connections and 3 more waiting for the direct call,
    taken within 10 ms: busy, the listener posts one accept."""
    complete_posted(pool)
    pool.waiting += connections(3)
    clock.now += 0.01
    take(pool, BACKLOG + 3)
    assert len(pool._posted) == 1


def test_a_new_listener_posts_the_pool(pool: Pool) -> None:
    assert len(pool._posted) == BACKLOG


def test_busy_with_direct_hits_posts_one_accept(pool: Pool, clock: Clock) -> None:
    complete_posted(pool)
    pool.waiting += connections(3)
    clock.now += 0.06  # 7 connections in 60 ms: faster than one per 10 ms
    take(pool, BACKLOG + 3)
    assert len(pool._posted) == 1
    assert pool._counters.direct_accept == 3


def test_slow_connections_post_the_pool(pool: Pool, clock: Clock) -> None:
    complete_posted(pool)
    pool.waiting += connections(3)
    clock.now += 0.08  # 7 connections in 80 ms: slower than one per 10 ms
    take(pool, BACKLOG + 3)
    assert len(pool._posted) == BACKLOG


def test_connections_that_never_waited_post_the_pool(pool: Pool, clock: Clock) -> None:
    """Fast, but all through the pool: none was waiting for the direct call
    (a client connecting one at a time)."""
    complete_posted(pool)
    clock.now += 0.001
    take(pool, BACKLOG)
    assert len(pool._posted) == BACKLOG


def test_each_idle_spell_is_judged_on_its_own(pool: Pool, clock: Clock) -> None:
    """The count, the direct hits and the time start again at each idle."""
    complete_posted(pool)
    pool.waiting += connections(3)
    clock.now += 0.01
    take(pool, BACKLOG + 3)  # busy: one accept posted
    assert len(pool._posted) == 1
    # the wake-up's connection, then one the direct call finds, 15 ms after
    # the last idle: 2 in 15 ms, busy (measured from the last idle, not from
    # the start: 9 connections since would allow 90 ms anyway)
    complete_posted(pool)
    pool.waiting += connections(1)
    clock.now += 0.015
    take(pool, 2)
    assert len(pool._posted) == 1
    # one more, 50 ms on, taken by the wake-up alone: no direct hit since the
    # last idle (they were counted for the spell before), and 1 in 50 ms
    complete_posted(pool)
    clock.now += 0.05
    take(pool, 1)
    assert len(pool._posted) == BACKLOG


def test_a_fast_spell_without_direct_hits_after_a_busy_one_posts_the_pool(
    pool: Pool, clock: Clock
) -> None:
    """The hits of the spell before do not count: the wake-up's connection
    alone, soon after, is not busy (none waited for the direct call)."""
    busy_spell(pool, clock)
    complete_posted(pool)
    clock.now += 0.002
    take(pool, 1)
    assert len(pool._posted) == BACKLOG


def test_one_hit_over_a_long_spell_is_not_busy(pool: Pool, clock: Clock) -> None:
    """A direct hit, but 2 connections over 50 ms (the 9 taken in the spell
    before must not count)."""
    busy_spell(pool, clock)
    complete_posted(pool)
    pool.waiting += connections(1)
    clock.now += 0.05
    take(pool, 2)
    assert len(pool._posted) == BACKLOG


def test_the_whole_pool_without_the_knob(
    pool: Pool, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """io_uring's flags (busy_wakeup_accepts None): the pool, busy or not."""
    monkeypatch.setattr(Pool, "direct_while_posted", True)
    monkeypatch.setattr(Pool, "busy_wakeup_accepts", None)
    complete_posted(pool)
    pool.waiting += connections(3)
    clock.now += 0.01
    take(pool, BACKLOG + 3)
    assert len(pool._posted) == BACKLOG


def test_direct_accepts_raise_the_ceiling_too(pool: Pool) -> None:
    """After a give-way (descriptors ran out while posting), the ceiling on
    queued plus posted rises by one per connection accepted, whether a
    posted accept or the direct call took it."""
    pool._ceiling, pool._ceiling_max = 1, 8
    complete_posted(pool)  # 4 posted accepts bring connections
    assert pool._ceiling == 5
    pool.waiting += connections(2)
    take(pool, BACKLOG + 2)  # and the direct call takes 2
    assert pool._counters.direct_accept == 2
    assert pool._ceiling == 7
