"""Run one test against one backend: server up, load, CPU accounting, server down."""

from __future__ import annotations

import json
import resource
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pinning import CpuSet, Placement, pin_to
from procstat import cpu_seconds, rss_bytes
from scenarios import Scenario, Settings
from servers import ServerError, log_tail, running_server, server_command


@dataclass
class Outcome:
    backend: str
    test: str
    error: str | None = None
    load: dict[str, Any] = field(default_factory=dict)  # the loadgen's JSON line
    server_cpu_s: float | None = None
    #: server resident memory just before the load, and its peak during it
    server_rss_before: int | None = None
    server_rss_peak: int | None = None
    loadgen_cpu_s: float | None = None
    wall_s: float | None = None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class RssSampler:
    """Samples a process's resident memory every 50 ms, keeping the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except OSError:
                return
            if self._stop.wait(0.05):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_load(
    loadgen: Path, args: list[str], timeout: float, cpus: CpuSet | None, processes: int = 1
) -> dict[str, Any]:
    """Run `processes` load generators with `args` at once; merge their results
    (each prints its result as a JSON line, the last line of its output)."""
    procs = [
        subprocess.Popen(
            [str(loadgen), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=pin_to(cpus),
        )
        for _ in range(processes)
    ]
    results = []
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            lines = out.strip().splitlines()
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"{loadgen.name} exited {proc.returncode}: {err.strip()}")
            results.append(json.loads(lines[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return merge_results(results)


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several load generators: counts add up, durations
    (``*_s``) take the longest, per-kind failure counts add up."""
    merged: dict[str, Any] = dict(results[0])
    for result in results[1:]:
        for key, value in result.items():
            if key.endswith("_s") and isinstance(value, (int, float)):
                merged[key] = max(merged[key], value)
            elif isinstance(value, dict):
                kinds = merged.setdefault(key, {})
                for kind, count in value.items():
                    kinds[kind] = kinds.get(kind, 0) + count
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                merged[key] += value
    if len(results) > 1:
        merged["processes"] = len(results)
    return merged


def measure(
    backend: str,
    scenario: Scenario,
    settings: Settings,
    binaries: dict[str, Path],
    python: str,
    where: Placement,
    log_dir: Path,
) -> Outcome:
    outcome = Outcome(backend=backend, test=scenario.name)
    tool = binaries.get(scenario.tool)
    if tool is None:
        outcome.error = (
            f"{scenario.tool} is not installed (Debian: apt-get install {scenario.tool})"
        )
        return outcome
    try:
        command = server_command(
            backend, scenario.server_mode, scenario.backlog(settings), python, binaries
        )
    except ServerError as exc:
        outcome.error = str(exc)
        return outcome
    log_path = log_dir / f"{backend}-{scenario.name}.log"
    try:
        with running_server(command, log_path, where.server) as server:
            args = scenario.loadgen_args(settings, server.port)
            cpu_before = cpu_seconds(server.proc.pid)
            children_before = _children_cpu()
            started = time.monotonic()
            outcome.server_rss_before = rss_bytes(server.proc.pid)
            with RssSampler(server.proc.pid) as rss:
                outcome.load = run_load(
                    tool,
                    args,
                    scenario.timeout(settings),
                    where.loadgen,
                    scenario.processes(settings),
                )
            outcome.server_rss_peak = rss.peak
            outcome.wall_s = time.monotonic() - started
            outcome.loadgen_cpu_s = _children_cpu() - children_before
            outcome.server_cpu_s = cpu_seconds(server.proc.pid) - cpu_before
            if server.proc.poll() is not None:
                raise ServerError(f"server died during the run: {log_tail(log_path)}")
    except (ServerError, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    return outcome
