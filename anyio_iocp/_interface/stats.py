"""Statistics: counters a program can read inside a run, per run and per stream.

Counting must cost next to nothing on the per-message paths, so the engines
keep plain integers in one :class:`EngineCounters` per run and the streams a
few integers of their own; everything else (rates, operations still in
flight, operations completed by kind) is derived when somebody asks, from
state the engines keep anyway.

* ``anyio_iocp.statistics()`` inside a run: a :class:`RunStatistics` snapshot.
* ``stream.extra(StatisticsAttribute.stream)``: a :class:`StreamStatistics`.
* ``anyio_iocp.finished_runs()``: the statistics of the runs that ended in
  this process (the last :data:`KEEP_FINISHED`), for tools such as
  ``python -m anyio_iocp run --stats``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

#: ABD changes kept per run for the pool-size timeline
ABD_TIMELINE = 256
#: finished runs kept for finished_runs()
KEEP_FINISHED = 64


class EngineCounters:
    """The counters of one run's engine (plain attributes: the hot paths add to them)."""

    __slots__ = (
        "abd_changes",
        "abd_sizes",
        "abd_timeline",
        "accept_backoffs",
        "accept_hits",
        "accept_waits",
        "completions",
        "direct_accept",
        "direct_connect",
        "direct_recv",
        "direct_send",
        "listeners",
        "passes",
        "posted",
        "reaps",
        "started",
        "streams",
        "submits",
        "submitted",
        "waits",
    )

    def __init__(self) -> None:
        self.started = time.monotonic()
        #: operations handed to the kernel, by kind
        self.posted: dict[str, int] = {}
        #: completions reaped, and the reaps that found at least one
        self.completions = 0
        self.reaps = 0
        #: scheduler passes, and the system calls that handed entries to the kernel
        self.passes = 0
        self.submits = 0
        self.submitted = 0
        #: accepts, connects, receives and sends done by a direct non-blocking
        #: system call (a connect: one whose handshake may still have been waited for)
        self.direct_accept = 0
        self.direct_connect = 0
        self.direct_recv = 0
        self.direct_send = 0
        #: readiness waits (the readiness engine's way of waiting; on IOCP, a
        #: connect whose handshake was still under way)
        self.waits = 0
        #: accept(): found a connection accepted ahead / had to wait; pauses
        self.accept_hits = 0
        self.accept_waits = 0
        self.accept_backoffs = 0
        #: ABD: how often a stream's k moved, how often to each size, and when
        self.abd_changes = 0
        self.abd_sizes: dict[int, int] = {}
        self.abd_timeline: deque[tuple[float, int]] = deque(maxlen=ABD_TIMELINE)
        #: streams and listeners opened
        self.streams = 0
        self.listeners = 0

    def count_posted(self, kind: str, n: int = 1) -> None:
        posted = self.posted
        posted[kind] = posted.get(kind, 0) + n

    def uncount_posted(self, kind: str, n: int = 1) -> None:
        """Take back a count of operations that were not posted after all (no
        key left at 0: as if never counted)."""
        uncount(self.posted, kind, n)

    def abd_moved(self, k: int) -> None:
        self.abd_changes += 1
        sizes = self.abd_sizes
        sizes[k] = sizes.get(k, 0) + 1
        self.abd_timeline.append((time.monotonic() - self.started, k))


def uncount(counts: dict[Any, int], key: Any, n: int = 1) -> None:
    """Take ``n`` back from ``counts[key]``, removing the key at 0."""
    left = counts[key] - n
    if left:
        counts[key] = left
    else:
        del counts[key]


@dataclass(frozen=True)
class StreamStatistics:
    """One stream's counters (``stream.extra(StatisticsAttribute.stream)``)."""

    bytes_in: int
    bytes_out: int
    #: Automatic Burst Detection: k now, its cap, its highest, how often it moved
    recvburst: int
    recvburst_cap: int
    recvburst_peak: int
    recvburst_changes: int
    #: sends that returned before their bytes left (write-behind, sendcap > 1)
    sends_queued: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunStatistics:
    """A snapshot of one run's counters (``anyio_iocp.statistics()``)."""

    engine: str
    #: seconds since the engine started
    elapsed: float
    #: operations handed to the kernel, completed (final completion reaped)
    #: and still in flight, by kind ("recv", "send", "accept", ...)
    posted: dict[str, int]
    completed: dict[str, int]
    in_flight: dict[str, int]
    #: completions reaped (with the quiet sends that the C reaper counted),
    #: and the reaps that copied at least one out
    completions: int
    reaps: int
    #: scheduler passes, system calls that submitted, entries submitted
    passes: int
    submits: int
    submitted: int
    #: accepts, receives and sends done by a direct system call, against ring operations
    direct_calls: dict[str, int]
    ring_operations: int
    #: readiness waits (readiness engine; IOCP: connects still under way)
    waits: int
    bytes_in: int
    bytes_out: int
    streams: int
    listeners: int
    accept_hits: int
    accept_waits: int
    accept_backoffs: int
    #: ABD: changes of a stream's k, how often to each size, and the last
    #: changes as (seconds since start, k)
    abd_changes: int
    abd_sizes: dict[int, int]
    abd_timeline: list[tuple[float, int]] = field(default_factory=list)
    #: schedule points taken and skipped: counted once the stream layer may
    #: skip them (the performance issue); None until then
    schedule_points: dict[str, int] | None = None

    @property
    def completions_per_reap(self) -> float:
        return self.completions / self.reaps if self.reaps else 0.0

    @property
    def submissions_per_pass(self) -> float:
        return self.submits / self.passes if self.passes else 0.0

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["abd_sizes"] = {str(k): v for k, v in self.abd_sizes.items()}
        result["completions_per_reap"] = round(self.completions_per_reap, 3)
        result["submissions_per_pass"] = round(self.submissions_per_pass, 3)
        return result

    def summary(self) -> str:
        """A few lines for people."""

        def kinds(counts: dict[str, int]) -> str:
            return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())) or "none"

        lines = [
            f"anyio-iocp run on {self.engine}: {self.elapsed:.3f} s, "
            f"{self.streams:,} streams, {self.listeners:,} listeners",
            f"  bytes in {self.bytes_in:,}, out {self.bytes_out:,}",
            f"  posted: {kinds(self.posted)}",
            f"  completed: {kinds(self.completed)}; in flight: {kinds(self.in_flight)}",
            f"  completions {self.completions:,} in {self.reaps:,} reaps "
            f"({self.completions_per_reap:.2f} per reap)",
            f"  passes {self.passes:,}, submissions {self.submits:,} "
            f"({self.submissions_per_pass:.3f} per pass), entries {self.submitted:,}",
            f"  direct calls: {kinds(self.direct_calls)}; ring operations "
            f"{self.ring_operations:,}; readiness waits {self.waits:,}",
            f"  accept: {self.accept_hits:,} ready, {self.accept_waits:,} waited, "
            f"{self.accept_backoffs:,} back-offs",
            f"  ABD: {self.abd_changes:,} changes; sizes "
            + (", ".join(f"k={k}: {v:,}" for k, v in sorted(self.abd_sizes.items())) or "none"),
        ]
        return "\n".join(lines)


def run_statistics(
    engine: str,
    counters: EngineCounters,
    posted: dict[str, int],
    in_flight: dict[str, int],
    passes: int,
    bytes_moved: tuple[int, int],
    completions: int,
) -> RunStatistics:
    """Build a snapshot from the counters, what the engine posted and has in
    flight, its scheduler passes, the (in, out) bytes of the run's streams, and
    the completions it reaped (``Engine.completions``: the io_uring reaper
    counts some in C, not in the counters)."""
    completed = {kind: n - in_flight.get(kind, 0) for kind, n in posted.items()}
    return RunStatistics(
        engine=engine,
        elapsed=time.monotonic() - counters.started,
        posted=posted,
        completed=completed,
        in_flight={k: v for k, v in in_flight.items() if v},
        completions=completions,
        reaps=counters.reaps,
        passes=passes,
        submits=counters.submits,
        submitted=counters.submitted,
        direct_calls={
            "accept": counters.direct_accept,
            "connect": counters.direct_connect,
            "recv": counters.direct_recv,
            "send": counters.direct_send,
        },
        ring_operations=sum(posted.values()),
        waits=counters.waits,
        bytes_in=bytes_moved[0],
        bytes_out=bytes_moved[1],
        streams=counters.streams,
        listeners=counters.listeners,
        accept_hits=counters.accept_hits,
        accept_waits=counters.accept_waits,
        accept_backoffs=counters.accept_backoffs,
        abd_changes=counters.abd_changes,
        abd_sizes=dict(counters.abd_sizes),
        abd_timeline=list(counters.abd_timeline),
    )


_finished: deque[RunStatistics] = deque(maxlen=KEEP_FINISHED)
_finished_lock = threading.Lock()


def add_finished(stats: RunStatistics) -> None:
    with _finished_lock:
        _finished.append(stats)


def finished_runs() -> tuple[RunStatistics, ...]:
    """The statistics of the ``"iocp"`` runs that ended in this process, oldest
    first (at most the last 64)."""
    with _finished_lock:
        return tuple(_finished)
