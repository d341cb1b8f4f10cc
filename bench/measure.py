"""Run one test against one backend: server up, load, CPU accounting, server down."""

from __future__ import annotations

import json
import resource
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pinning import CpuSet, Placement, pin_to
from procstat import cpu_seconds
from scenarios import Scenario, Settings
from servers import ServerError, log_tail, running_server, server_command


@dataclass
class Outcome:
    backend: str
    test: str
    error: str | None = None
    load: dict[str, Any] = field(default_factory=dict)  # the loadgen's JSON line
    server_cpu_s: float | None = None
    loadgen_cpu_s: float | None = None
    wall_s: float | None = None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_load(loadgen: Path, args: list[str], timeout: float, cpus: CpuSet | None) -> dict[str, Any]:
    done = subprocess.run(
        [str(loadgen), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=pin_to(cpus),
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"loadgen exited {done.returncode}: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


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
    command = server_command(
        backend, scenario.server_mode, scenario.backlog(settings), python, binaries["floor"]
    )
    log_path = log_dir / f"{backend}-{scenario.name}.log"
    try:
        with running_server(command, log_path, where.server) as server:
            args = scenario.loadgen_args(settings, server.port)
            cpu_before = cpu_seconds(server.proc.pid)
            children_before = _children_cpu()
            started = time.monotonic()
            outcome.load = run_load(
                binaries["loadgen"], args, scenario.timeout(settings), where.loadgen
            )
            outcome.wall_s = time.monotonic() - started
            outcome.loadgen_cpu_s = _children_cpu() - children_before
            outcome.server_cpu_s = cpu_seconds(server.proc.pid) - cpu_before
            if server.proc.poll() is not None:
                raise ServerError(f"server died during the run: {log_tail(log_path)}")
    except (ServerError, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    return outcome
