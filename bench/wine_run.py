"""The benchmark with its servers under Wine: Windows CPython running
bench/server_app.py on each backend, loaded from Linux by bench/loadgen.c on
127.0.0.1 (Wine runs Windows sockets on the host's sockets).

Run it through the Wine harness, which prepares Windows Python and exports
``WINE`` and ``WINE_PY``::

    bash scripts/wine_test.sh --bench [--seconds 3] [--repeat 1]
        [--backends asyncio,trio,iocp,iocp-strict] [--tests echo1,echo64,churn,bulk,storm]

Backends: ``asyncio`` is AnyIO on asyncio's default Windows loop, the
ProactorEventLoop (IOCP); ``trio`` is AnyIO on Trio (AFD polling); ``iocp`` is
this project's IOCP engine (``iocp-strict``: the same with a schedule point
on every stream call).  Repetitions are interleaved.  These are Wine figures:
compare the backends with each other, never with Linux or Windows figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from compile_c import build_programs
from measure import run_load
from procstat import cpu_seconds, find_wineserver
from scenarios import SCENARIOS, Settings

BENCH_DIR = Path(__file__).resolve().parent
BACKENDS = ("asyncio", "trio", "iocp")
START_TIMEOUT = 60.0

# primary figure of each test: (loadgen key, label, format)
COLUMNS = {
    "echo1": ("ops_per_s", "echo 1 conn", "{:,.0f}/s"),
    "echo64": ("ops_per_s", "echo 64 conns", "{:,.0f}/s"),
    "churn": ("exchanges_per_s", "hello/close churn", "{:,.0f}/s"),
    "bulk": ("mb_per_s", "bulk 4 conns", "{:,.0f} MB/s"),
    "storm": ("elapsed_s", "simultaneous connects", "{:.1f} s"),
}
#: CPU per unit of work, the second table: (loadgen key of the count, units
#: per count, label, CPU seconds per unit -> the figure shown)
CPU_UNITS = {
    "echo1": ("ops", 1.0, "us per round trip", 1e6),
    "echo64": ("ops", 1.0, "us per round trip", 1e6),
    "churn": ("exchanges", 1.0, "us per exchange", 1e6),
    "bulk": ("bytes", 1e-6, "ms per MB", 1e3),
}


class WineServer:
    """bench/server_app.py under Wine; its output is piped (a Wine process whose
    output goes straight to a file dies at start)."""

    def __init__(self, backend: str, mode: str, backlog: int) -> None:
        wine, python = os.environ["WINE"], os.environ["WINE_PY"]
        script = "Z:" + str(BENCH_DIR / "server_app.py")
        self.proc = subprocess.Popen(
            [wine, python, script, backend, mode, str(backlog)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output: list[str] = []
        self.port = self._read_port()
        threading.Thread(target=self._drain, daemon=True).start()

    def _read_port(self) -> int:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.strip().isdigit():
                return int(line)
            self.output.append(line)
        self.stop()
        raise RuntimeError("server did not start: " + "".join(self.output[-5:]))

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _cpu(pid: int | None) -> float | None:
    """CPU seconds of ``pid`` so far; None without a pid or once it is gone
    (the run's rate is kept, its CPU cell stays empty)."""
    if pid is None:
        return None
    try:
        return cpu_seconds(pid)
    except OSError:
        return None


def run_one(backend: str, test: str, settings: Settings, loadgen: Path) -> dict[str, Any]:
    scenario = SCENARIOS[test]
    server = WineServer(backend, scenario.server_mode, scenario.backlog(settings))
    try:
        time.sleep(0.5)  # let the Wine process settle after printing its port
        # CPU while the load runs: the server's process (Windows Python is one
        # Linux process) and the wineserver, which does a share of every call
        wineserver = find_wineserver()
        pids = (server.proc.pid, wineserver)
        before = [_cpu(pid) for pid in pids]
        load = run_load(
            loadgen, scenario.loadgen_args(settings, server.port), scenario.timeout(settings), None
        )
        after = [_cpu(pid) for pid in pids]
        load["server_cpu_s"], load["wineserver_cpu_s"] = (
            None if b is None or a is None else a - b for b, a in zip(before, after, strict=True)
        )
        return load
    finally:
        server.stop()


def format_cell(values: list[float], fmt: str, note: str) -> str:
    """The median, then the range of the runs when there were several."""
    if not values:
        return note
    cell = fmt.format(statistics.median(values))
    if len(values) > 1:
        cell += f" [{fmt.format(min(values))} to {fmt.format(max(values))}]"
    return cell + note


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--storm", type=int, default=3000)
    p.add_argument("--backends", default=",".join(BACKENDS))
    p.add_argument("--tests", default=",".join(COLUMNS))
    args = p.parse_args(argv)
    backends = args.backends.split(",")
    tests = args.tests.split(",")
    settings = Settings(seconds=args.seconds, storm_n=args.storm)
    loadgen = build_programs()["loadgen"]
    # Interleaved: each round runs every backend on a test before the next
    # round, so a change in the machine's load touches every backend alike.
    values: dict[tuple[str, str], list[float]] = {}
    #: CPU (server + wineserver) per unit of work, per run
    costs: dict[tuple[str, str], list[float]] = {}
    notes: dict[tuple[str, str], str] = {}
    for _round in range(args.repeat):
        for test in tests:
            for backend in backends:
                cell = (backend, test)
                values.setdefault(cell, [])
                try:
                    load = run_one(backend, test, settings, loadgen)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                    notes[cell] = f"failed: {exc}".replace("|", "/")[:80]
                    print(f"# {backend} {test}: {notes[cell]}", file=sys.stderr)
                    continue
                print(f"# {backend} {test}: {load}", file=sys.stderr)
                values[cell].append(float(load[COLUMNS[test][0]]))
                if test in CPU_UNITS and None not in (
                    load["server_cpu_s"],
                    load["wineserver_cpu_s"],
                ):
                    key, per_count, _label, shown = CPU_UNITS[test]
                    units = float(load.get(key, 0)) * per_count
                    cpu = load["server_cpu_s"] + load["wineserver_cpu_s"]
                    if units > 0:
                        costs.setdefault(cell, []).append(cpu / units * shown)
                if test == "storm":
                    notes[cell] = f" ({load.get('answered', '?')} of {load.get('n', '?')} answered)"
    print("| server backend (under Wine) | " + " | ".join(COLUMNS[t][1] for t in tests) + " |")
    print("| --- " * (len(tests) + 1) + "|")
    for backend in backends:
        cells = [
            format_cell(values[(backend, t)], COLUMNS[t][2], notes.get((backend, t), ""))
            for t in tests
        ]
        print(f"| {backend} | " + " | ".join(cells) + " |")
    cost_tests = [t for t in tests if t in CPU_UNITS]
    if cost_tests and costs:
        print(
            "\nCPU per unit of work, the server's process and the wineserver together "
            "(lower is better; the load generator's share is not counted):\n"
        )
        print(
            "| server backend (under Wine) | "
            + " | ".join(f"{COLUMNS[t][1]}, {CPU_UNITS[t][2]}" for t in cost_tests)
            + " |"
        )
        print("| --- " * (len(cost_tests) + 1) + "|")
        for backend in backends:
            cells = [
                format_cell(costs.get((backend, t), []), "{:,.1f}", "") or "-" for t in cost_tests
            ]
            print(f"| {backend} | " + " | ".join(cells) + " |")
    print(
        f"\nmedian of {args.repeat} run(s), {args.seconds:g} s each; "
        f"command: bash scripts/wine_test.sh --bench {' '.join(argv)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
