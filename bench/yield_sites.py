"""Where the benchmark server yields, per echoed message, at full speed.

Counts the server's calls of the package's ``shielded_yield``
(``anyio_iocp._interface.yielding``: the yields of calls that did not
wait): the stream layer's budget (``sockets.py``), a receive that yields
once before it waits ("yield first", ``anyio_iocp._flow.yield_first``, on
every engine) with what the look after it found, and the rest.  Counts, not
times: they say what the server did per message, which a profiler's slowdown
changes (docs/performance.md, "What callgrind's figures measure").

    .venv/bin/python bench/yield_sites.py --backend iocp --conns 64 --pin same,split
    .venv/bin/python bench/yield_sites.py --conns 64 --pin same --callgrind
    .venv/bin/python bench/yield_sites.py --mode http --backend iocp-strict --pin split

``--mode http`` loads the server's h11 mode with wrk (per request, not per
message).  Needs bench/.build/loadgen (built by bench/run.py), and wrk for
``--mode http``.  The server imports the
package from ``PYTHONPATH`` when set, otherwise the installed one.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scenarios import Settings, wrk_args

BENCH = Path(__file__).resolve().parent
LOADGEN = BENCH / ".build" / "loadgen"
#: CPU of the server, and of the load generator per placement
SERVER_CPU = 1
LOAD_CPU = {"same": 1, "split": 0}


def serve(backend: str, mode: str, out: str) -> None:
    """The server: bench/server_app.py with the yields counted; SIGUSR1 starts
    the count, SIGUSR2 writes it to ``out`` and ends the process."""
    import runpy

    from anyio_iocp._flow import yield_first
    from anyio_iocp._interface import yielding

    counts: collections.Counter[str] = collections.Counter()
    checkpoint = yielding.shielded_yield

    async def counted() -> None:
        caller = sys._getframe(1).f_code.co_filename
        counts[Path(caller).name] += 1
        await checkpoint()

    should_yield_first, looked_again = yield_first.should_yield_first, yield_first.looked_again

    def counted_decision(stream: Any) -> bool:
        yields = should_yield_first(stream)
        counts["yield first"] += yields
        return yields

    def counted_look(stream: Any, found: bool) -> None:
        counts["look found bytes" if found else "look found nothing"] += 1
        looked_again(stream, found)

    # every engine imports the three by name: replace them in the module and in
    # every module loaded already (the engines load when the run starts)
    replaced = {
        id(should_yield_first): counted_decision,
        id(looked_again): counted_look,
        id(checkpoint): counted,
    }
    for module in [yield_first, yielding, *list(sys.modules.values())]:
        names = vars(module) if module is not None else {}
        for name, value in list(names.items()):
            if id(value) in replaced:
                names[name] = replaced[id(value)]

    def dump(*_: object) -> None:
        Path(out).write_text(json.dumps(counts))
        os._exit(0)

    signal.signal(signal.SIGUSR1, lambda *_: counts.clear())
    signal.signal(signal.SIGUSR2, dump)
    sys.argv = [str(BENCH / "server_app.py"), backend, mode]
    runpy.run_path(sys.argv[0], run_name="__main__")


#: the server under callgrind, as bench/callgrind.sh runs it (instrumented:
#: some 50 times slower), for the counts of that run
CALLGRIND = ("valgrind", "-q", "--tool=callgrind", "--callgrind-out-file=/dev/null")


def load_command(mode: str, port: str, conns: int, seconds: float) -> list[str]:
    """The load generator's command line (for http, bench/run.py's wrk arguments)."""
    if mode == "http":
        return ["wrk", *wrk_args(Settings(seconds=seconds, http_conns=conns), int(port))]
    return [str(LOADGEN), "echo", "127.0.0.1", port, str(conns), "64", str(seconds)]


#: the load generator's count of what was served, by server mode
SERVED = {"echo": "ops", "http": "requests"}


def measure(
    backend: str, mode: str, conns: int, seconds: float, pin: str, out: Path, callgrind: bool
) -> dict[str, float]:
    wrapper = CALLGRIND if callgrind else ()
    serve_args = [sys.executable, __file__, "--serve", backend, mode, str(out)]
    server = subprocess.Popen(
        ["taskset", "-c", str(SERVER_CPU), *wrapper, *serve_args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        server.send_signal(signal.SIGUSR1)
        time.sleep(0.1)
        load_args = load_command(mode, port, conns, seconds)
        load = subprocess.run(
            ["taskset", "-c", str(LOAD_CPU[pin]), *load_args],
            capture_output=True,
            text=True,
            check=True,
        )
        server.send_signal(signal.SIGUSR2)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    messages = json.loads(load.stdout.strip().splitlines()[-1])[SERVED[mode]]
    counts = json.loads(out.read_text())
    # every yield first is one of the yields counted by module: the rest are "other"
    kinds = {"budget": counts.pop("sockets.py", 0)}
    for kind in ("yield first", "look found bytes", "look found nothing"):
        kinds[kind] = counts.pop(kind, 0)
    kinds["other"] = sum(counts.values()) - kinds["yield first"]
    return {kind: count / messages for kind, count in kinds.items()} | {"messages": messages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--serve", nargs=3, metavar=("BACKEND", "MODE", "OUT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--backend", default="iocp", help="a backend of bench/server_app.py")
    parser.add_argument(
        "--mode", choices=sorted(SERVED), default="echo", help="echo (loadgen) or http (wrk)"
    )
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--pin", default="same,split", help="same, split, or same,split for both")
    parser.add_argument(
        "--callgrind", action="store_true", help="the server under callgrind (bench/callgrind.sh)"
    )
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
        return
    pins = args.pin.split(",")
    if unknown := [pin for pin in pins if pin not in LOAD_CPU]:
        parser.error(f"unknown --pin {unknown[0]!r}: expected same or split (comma-separated)")
    if not LOADGEN.exists():
        parser.error(f"{LOADGEN} is missing: bench/run.py builds it")
    out = Path(f"/tmp/yield_sites.{os.getpid()}.json")
    try:
        for pin in pins:
            result = measure(
                args.backend, args.mode, args.conns, args.seconds, pin, out, args.callgrind
            )
            messages = int(result.pop("messages"))
            shown = ", ".join(f"{name} {value:.3f}" for name, value in result.items())
            print(
                f"{args.backend} {args.mode} {args.conns} conns, {pin}: {messages} "
                f"{SERVED[args.mode]}; per one: {shown or 'no yields'}"
            )
    finally:
        out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
