"""Requests to the wineserver per unit of work, by request: the Wine
benchmark's servers (``bench/wine_run.py``), counted instead of timed.

Under Wine most socket calls are one to three requests to the wineserver
(for a ``recv``: ``get_handle_fd``, since Wine gives sockets no cached
descriptor, then ``recv_socket`` and ``set_async_direct_result``), and those
requests are most of a socket call's cost there.  Their count per round trip
or per exchange does not move with the machine's load, unlike the rates.

Run it through the Wine harness, which prepares Windows Python::

    bash scripts/wine_test.sh --requests [--seconds 2] [--backends trio,iocp]
        [--tests echo1,echo64,churn,bulk]

For each backend and test it restarts the prefix's wineserver with request
tracing (``wineserver -f -d2``, to a log under ``/tmp``), starts the server
under Wine, runs the load from Linux, and counts the requests the log shows
between the load's start and end, per unit of work (round trip, exchange,
MB).  ``ioctl`` requests are split by code, named where this project knows
the code.  Tracing slows the wineserver: the load's rate here is not a
benchmark figure.  The counts are every request the wineserver saw in that
time, from every process of the prefix (the server's, and any of Wine's
own; in the runs of ``docs/performance.md`` the requests that are not the
server's socket calls, such as ``get_thread_info``, were under 0.01 per
unit); requests of the server's start-up that end later than the 1 s it is
given would be counted too.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compile_c import build_programs
from measure import run_load
from scenarios import SCENARIOS, Settings
from wine_run import CPU_UNITS, WineServer

#: a request line of the trace: "0024: recv_socket( ... )" (a reply reads
#: "0024: recv_socket() = ...")
REQUEST = re.compile(r"^[0-9a-f]{4}: (\w+)\( (?:code=([0-9a-f]{8}))?")
#: ioctl codes seen on socket paths (Wine's include/wine/afd.h numbering)
IOCTL_NAMES = {
    "0001202f": "AFD_GETSOCKNAME",
    "00012024": "AFD_POLL",
    "00120320": "WINE_CREATE (socket)",
    "00120324": "WINE_ACCEPT",
    "00120328": "WINE_ACCEPT_INTO (AcceptEx)",
    "00120344": "WINE_FIONBIO",
}
WINESERVER_CANDIDATES = ("wineserver", "/usr/lib/wine/wineserver64", "/usr/lib/wine/wineserver")


def wineserver_command() -> str:
    for name in WINESERVER_CANDIDATES:
        path = shutil.which(name) or (name if os.path.exists(name) else None)
        if path:
            return path
    raise RuntimeError("no wineserver found")


def count_requests(trace: str) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for line in trace.splitlines():
        match = REQUEST.match(line)
        if match:
            name, code = match.groups()
            if name == "ioctl" and code:
                name = f"ioctl {IOCTL_NAMES.get(code, code)}"
            counts[name] += 1
    return counts


def run_traced(
    backend: str, test: str, settings: Settings, loadgen: Path, log: Path
) -> tuple[dict[str, object], collections.Counter[str]]:
    wineserver = wineserver_command()
    subprocess.run([wineserver, "-k"], stderr=subprocess.DEVNULL, check=False)
    subprocess.run([wineserver, "-w"], stderr=subprocess.DEVNULL, check=False)
    with log.open("w") as out:
        tracer = subprocess.Popen([wineserver, "-f", "-d2"], stdout=out, stderr=out)
    try:
        time.sleep(1.0)
        scenario = SCENARIOS[test]
        server = WineServer(backend, scenario.server_mode, scenario.backlog(settings))
        try:
            time.sleep(1.0)  # start-up's requests (imports, registry) end before the load
            start = log.stat().st_size
            load = run_load(
                loadgen,
                scenario.loadgen_args(settings, server.port),
                scenario.timeout(settings) * 5,  # tracing slows every call
                None,
            )
            end = log.stat().st_size
        finally:
            server.stop()
    finally:
        subprocess.run([wineserver, "-k"], stderr=subprocess.DEVNULL, check=False)
        try:
            tracer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
    with log.open("rb") as f:
        f.seek(start)
        trace = f.read(end - start).decode("latin-1")
    return load, count_requests(trace)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--backends", default="trio,iocp")
    p.add_argument("--tests", default="echo1,echo64,churn,bulk")
    p.add_argument("--top", type=int, default=12, help="requests shown per cell")
    args = p.parse_args(argv)
    settings = Settings(seconds=args.seconds, storm_n=300)
    loadgen = build_programs()["loadgen"]
    logdir = Path(tempfile.mkdtemp(prefix="wine_requests_"))
    for test in args.tests.split(","):
        if test not in CPU_UNITS:
            print(f"# {test}: no unit of work to count per (use {', '.join(CPU_UNITS)})")
            continue
        key, per_count, label, _shown = CPU_UNITS[test]
        unit = label.split(" per ")[-1]
        for backend in args.backends.split(","):
            log = logdir / f"{backend}_{test}.log"
            load, counts = run_traced(backend, test, settings, loadgen, log)
            units = float(load.get(key, 0) or 0) * per_count  # type: ignore[arg-type]
            if units <= 0:
                print(f"# {backend} {test}: no work done: {load}")
                continue
            total = sum(counts.values())
            print(f"\n{backend} {test}: {total / units:.2f} requests per {unit} ({units:,.0f})")
            for name, n in counts.most_common(args.top):
                print(f"  {name:40s} {n / units:7.3f}")
    print(f"\ntraces in {logdir}; command: bash scripts/wine_test.sh --requests {' '.join(argv)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
