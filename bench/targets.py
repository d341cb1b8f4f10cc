"""The performance targets of the project (issue 6; http is issue 14's),
checked against one run.

Each target compares backends measured side by side in the same run; the
lines say what was measured, the ratio, and whether the target is met.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from measure import Outcome
from report import Results

Check = Callable[[Results], tuple[str, bool] | None]


@dataclass(frozen=True)
class Target:
    name: str
    check: Check


def _load(results: Results, backend: str, test: str, key: str) -> float | None:
    o = results.get((backend, test))
    if o is None or o.error is not None or key not in o.load:
        return None
    return float(o.load[key])


def _per_cpu(results: Results, backend: str, test: str, key: str) -> float | None:
    o: Outcome | None = results.get((backend, test))
    value = _load(results, backend, test, key)
    if o is None or value is None or not o.server_cpu_s:
        return None
    return value / o.server_cpu_s


def _per_cpu_target(test: str, key: str, unit: str) -> Check:
    def check(r: Results) -> tuple[str, bool] | None:
        iocp, trio = _per_cpu(r, "iocp", test, key), _per_cpu(r, "trio", test, key)
        uvloop = _per_cpu(r, "asyncio+uvloop", test, key)
        rate_key = {"ops": "ops_per_s", "exchanges": "exchanges_per_s"}[key]
        rate_iocp, rate_trio = _load(r, "iocp", test, rate_key), _load(r, "trio", test, rate_key)
        if None in (iocp, trio, uvloop, rate_iocp, rate_trio):
            return None
        assert iocp and trio and uvloop and rate_iocp and rate_trio
        met = iocp >= 2 * trio and iocp > uvloop and rate_iocp >= rate_trio
        return (
            f"{iocp:,.0f} {unit} per server CPU-s = {iocp / trio:.2f}x trio, "
            f"{iocp / uvloop:.2f}x asyncio+uvloop; rate {rate_iocp / rate_trio:.2f}x trio",
            met,
        )

    return check


def _bulk(r: Results) -> tuple[str, bool] | None:
    iocp, floor = _load(r, "iocp", "bulk", "mb_per_s"), _load(r, "floor", "bulk", "mb_per_s")
    cpu_gb_iocp = _cpu_per_gb(r, "iocp")
    cpu_gb_trio = _cpu_per_gb(r, "trio")
    if None in (iocp, floor, cpu_gb_iocp, cpu_gb_trio):
        return None
    assert iocp and floor and cpu_gb_iocp and cpu_gb_trio
    met = iocp >= 0.9 * floor and cpu_gb_iocp < cpu_gb_trio
    return (
        f"{iocp:,.0f} MB/s = {iocp / floor:.0%} of the C floor; "
        f"{cpu_gb_iocp:.2f} server CPU-s per GB vs trio {cpu_gb_trio:.2f}",
        met,
    )


def _cpu_per_gb(r: Results, backend: str) -> float | None:
    o = r.get((backend, "bulk"))
    if o is None or o.error is not None or not o.server_cpu_s or not o.load.get("bytes"):
        return None
    return o.server_cpu_s / (float(o.load["bytes"]) / 1e9)


def _latency(r: Results) -> tuple[str, bool] | None:
    iocp = _load(r, "iocp", "echo1", "rtt_median_us")
    trio = _load(r, "trio", "echo1", "rtt_median_us")
    if iocp is None or trio is None:
        return None
    return f"median RTT {iocp:.1f} us vs trio {trio:.1f} us ({iocp / trio:.2f}x)", iocp <= trio


def _storm(r: Results) -> tuple[str, bool] | None:
    # the target names the httpd profile: its column when it ran, else iocp's
    name = "iocp-httpd" if ("iocp-httpd", "storm") in r else "iocp"
    o, t = r.get((name, "storm")), r.get(("trio", "storm"))
    if o is None or t is None or o.error or t.error:
        return None
    n = int(o.load.get("n", 0))
    answered, failed = int(o.load.get("answered", 0)), int(o.load.get("failures", 0))
    elapsed, trio_elapsed = float(o.load["elapsed_s"]), float(t.load["elapsed_s"])
    met = n >= 20000 and answered == n and failed == 0 and elapsed < trio_elapsed
    return (
        f"{name}: {answered:,} of {n:,} answered, {failed} failed, {elapsed:.2f} s vs trio "
        f"{trio_elapsed:.2f} s (trio: {int(t.load.get('answered', 0)):,} answered)",
        met,
    )


def _memory(r: Results) -> tuple[str, bool] | None:
    per: dict[str, float] = {}
    for backend in ("iocp", "trio"):
        o = r.get((backend, "idle"))
        if o is None or o.error or o.server_rss_peak is None or o.server_rss_before is None:
            return None
        held = float(o.load.get("held", 0))
        if not held:
            return None
        per[backend] = (o.server_rss_peak - o.server_rss_before) / held
    return (
        f"{per['iocp']:,.0f} bytes per idle connection vs trio {per['trio']:,.0f}",
        per["iocp"] <= per["trio"],
    )


def _http(r: Results) -> tuple[str, bool] | None:
    iocp = _load(r, "iocp", "http", "requests_per_s")
    trio = _load(r, "trio", "http", "requests_per_s")
    if iocp is None or trio is None:
        return None
    return f"{iocp:,.0f} requests/s vs trio {trio:,.0f} ({iocp / trio:.2f}x)", iocp >= 1.1 * trio


TARGETS = [
    Target(
        "echo 64: >= 2x trio per CPU-s, > asyncio+uvloop, rate >= trio",
        _per_cpu_target("echo64", "ops", "round trips"),
    ),
    Target(
        "churn: >= 2x trio per CPU-s, > asyncio+uvloop, rate >= trio",
        _per_cpu_target("churn", "exchanges", "exchanges"),
    ),
    Target("bulk: >= 90% of the C floor, fewer CPU-s per GB than trio", _bulk),
    Target("echo 1: median RTT no slower than trio", _latency),
    Target("storm: 20,000 connects, all answered, faster than trio", _storm),
    Target("memory: RSS per idle connection <= trio", _memory),
    Target("http (issue 14): an h11 server under wrk, >= 1.1x trio's requests/s", _http),
]


def target_lines(results: Results) -> list[str]:
    """A markdown table: target, what was measured, met or not."""
    lines = ["| target | measured in this run | met |", "|---|---|---|"]
    for target in TARGETS:
        outcome = target.check(results)
        if outcome is None:
            lines.append(f"| {target.name} | not measured in this run | |")
        else:
            text, met = outcome
            lines.append(f"| {target.name} | {text} | {'yes' if met else 'no'} |")
    return lines
