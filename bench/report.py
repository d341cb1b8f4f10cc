"""Render outcomes as a markdown table, plus the machine description."""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata

from measure import Outcome

Value = Callable[[Outcome], float | None]
RATIO = ("iocp", "trio")  # numerator, denominator of the ratio column


@dataclass(frozen=True)
class Metric:
    test: str
    label: str
    value: Value
    fmt: str = ",.0f"


def _field(key: str, scale: float = 1.0) -> Value:
    def get(o: Outcome) -> float | None:
        v = o.load.get(key)
        return None if v is None else float(v) * scale

    return get


def _per_cpu(key: str, scale: float = 1.0) -> Value:
    """Work done (loadgen count `key` * scale) per server CPU-second."""

    def get(o: Outcome) -> float | None:
        v = o.load.get(key)
        if v is None or not o.server_cpu_s:
            return None
        return float(v) * scale / o.server_cpu_s

    return get


def _cpu(o: Outcome) -> float | None:
    return o.server_cpu_s


def _rss_growth(o: Outcome) -> float | None:
    if o.server_rss_peak is None or o.server_rss_before is None:
        return None
    return float(o.server_rss_peak - o.server_rss_before)


def _rss_per_connection(o: Outcome) -> float | None:
    growth, held = _rss_growth(o), o.load.get("held")
    if growth is None or not held:
        return None
    return growth / float(held)


METRICS: list[Metric] = [
    Metric("echo1", "round trips/s", _field("ops_per_s")),
    Metric("echo1", "median RTT us (lower=better)", _field("rtt_median_us"), ",.1f"),
    Metric("echo1", "p99 RTT us (lower=better)", _field("rtt_p99_us"), ",.1f"),
    Metric("echo1", "server CPU s", _cpu, ".2f"),
    Metric("echo1", "round trips per server CPU-s", _per_cpu("ops")),
    Metric("echo64", "round trips/s", _field("ops_per_s")),
    Metric("echo64", "p99 RTT us (lower=better)", _field("rtt_p99_us"), ",.1f"),
    Metric("echo64", "server CPU s", _cpu, ".2f"),
    Metric("echo64", "round trips per server CPU-s", _per_cpu("ops")),
    Metric("churn", "exchanges/s", _field("exchanges_per_s")),
    Metric("churn", "failures", _field("failures")),
    Metric("churn", "server CPU s", _cpu, ".2f"),
    Metric("churn", "exchanges per server CPU-s", _per_cpu("exchanges")),
    Metric("bulk", "MB/s", _field("mb_per_s"), ",.1f"),
    Metric("bulk", "server CPU s", _cpu, ".2f"),
    Metric("bulk", "MB per server CPU-s", _per_cpu("bytes", 1e-6), ",.1f"),
    Metric("idle", "connections held", _field("held")),
    Metric("idle", "server RSS growth MB (lower=better)", lambda o: _scaled(_rss_growth(o))),
    Metric("idle", "RSS bytes per connection (lower=better)", _rss_per_connection),
    Metric("storm", "answered", _field("answered")),
    Metric("storm", "failed", _field("failures")),
    Metric("storm", "elapsed s (lower=better)", _field("elapsed_s"), ".2f"),
    Metric("storm", "server CPU s", _cpu, ".2f"),
    Metric("http", "requests/s", _field("requests_per_s")),
    Metric("http", "median latency us (lower=better)", _field("latency_median_us"), ",.0f"),
    Metric("http", "p99 latency us (lower=better)", _field("latency_p99_us"), ",.0f"),
    Metric("http", "failures", _field("failures")),
    Metric("http", "server CPU s", _cpu, ".2f"),
    Metric("http", "requests per server CPU-s", _per_cpu("requests")),
]


def _scaled(value: float | None, scale: float = 1e-6) -> float | None:
    return None if value is None else value * scale


Results = dict[tuple[str, str], Outcome]  # (backend, test) -> outcome


def _cell(outcome: Outcome | None, metric: Metric) -> tuple[str, float | None]:
    if outcome is None:
        return "", None
    if outcome.error is not None:
        return "error", None
    value = metric.value(outcome)
    return ("-" if value is None else format(value, metric.fmt)), value


def markdown_table(results: Results, backends: list[str], tests: list[str]) -> str:
    show_ratio = all(b in backends for b in RATIO)
    header = ["test", "metric", *backends] + (["iocp/trio"] if show_ratio else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in METRICS:
        if metric.test not in tests:
            continue
        cells: list[str] = []
        values: dict[str, float | None] = {}
        for backend in backends:
            text, values[backend] = _cell(results.get((backend, metric.test)), metric)
            cells.append(text)
        if show_ratio:
            num, den = values[RATIO[0]], values[RATIO[1]]
            cells.append(f"{num / den:.2f}x" if num is not None and den else "")
        lines.append("| " + " | ".join([metric.test, metric.label, *cells]) + " |")
    return "\n".join(lines)


def notes(results: Iterable[Outcome]) -> list[str]:
    """Errors and loadgen failures, one line each (a repeated error once)."""
    tests_by_note: dict[tuple[str, str], list[str]] = {}
    for o in results:
        if o.error is not None:
            text = o.error
        elif o.load.get("failures"):
            text = f"failures {o.load.get('failures_by_kind')}"
        else:
            continue
        tests_by_note.setdefault((o.backend, text), []).append(o.test)
    return [
        f"- {backend} ({', '.join(tests)}): {text}"
        for (backend, text), tests in tests_by_note.items()
    ]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def read_somaxconn() -> int | None:
    try:
        with open("/proc/sys/net/core/somaxconn", encoding="ascii") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def machine_line() -> str:
    return (
        f"Machine: Linux {platform.release()}, nproc {len(os.sched_getaffinity(0))}, "
        f"Python {platform.python_version()}, anyio {_version('anyio')}, "
        f"trio {_version('trio')}, uvloop {_version('uvloop')}, "
        f"net.core.somaxconn {read_somaxconn()}"
    )
