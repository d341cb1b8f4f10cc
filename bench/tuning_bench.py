"""What the flow-control settings change, in one run (each case a fresh pair of processes).

(a) bulk:  one connection, an iocp sender writing 64 KiB chunks one way for
           SECONDS into an iocp sink; sender sendcap 1 or 20 x sink recvburst 1
           or 20.  MB/s counts only what the sink read: the sender half-closes
           and the clock runs until the sink has closed too.
(b) storm: N connections (default 20,000) opened at once by the C loadgen
           against an iocp hello server whose accept pool (``backlog``) is 10
           or 500.  The listen() queue asked for is 65536, which the kernel caps
           at ``net.core.somaxconn``.
(c) churn: 16 concurrent connect/hello/close loops from the C loadgen
           against an iocp hello server with ``profile="httpd"`` or the defaults.

Every iocp process forces the io_uring engine.  Output: a markdown table, the
machine line, the exact command; progress goes to stderr, server stderr to
bench/.build/logs/tuning-*.log.

Usage: python bench/tuning_bench.py [--seconds 4] [--repeat 3] [--storm 20000]
           [--storm-timeout 30] [--parts bulk,storm,churn] [--pin split|same|none]
           [--json FILE]

With the defaults the whole run takes about two minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream
from compile_c import DEFAULT_BUILD_DIR, build_programs
from measure import run_load
from pinning import PIN_MODES, Placement, pin_to, placement
from procstat import cpu_seconds
from report import machine_line, read_somaxconn
from server_app import HANDLERS, quiet
from servers import ServerError, log_tail, running_server

import anyio_iocp
from anyio_iocp import TuningAttribute

HOST = "127.0.0.1"
CHUNK = 65536
RUN_OPTIONS: dict[str, Any] = {"engine": "io_uring"}
LISTEN_BACKLOG = 65536  # asked of listen(); the kernel caps it at somaxconn
NOFILE_WANTED = 1 << 16
NOFILE_MARGIN = 100  # descriptors a storm process needs besides its connections
MONITOR_SECONDS = 0.01
SETTING_NAMES = ("backlog", "sendcap", "recvburst", "buffersize")

# -- server process -----------------------------------------------------------


def _log(**record: Any) -> None:
    print(json.dumps(record), file=sys.stderr, flush=True)


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE to `want` (the hard limit too when root); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
        except (ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _usages(obj: Any, names: tuple[str, ...]) -> dict[str, list[int]]:
    return {name: list(obj.extra(getattr(TuningAttribute, name))) for name in names}


async def _serve(mode: str, settings: dict[str, Any]) -> None:
    listener = await anyio_iocp.create_tcp_listener(
        local_host=HOST, local_port=0, listen_backlog=LISTEN_BACKLOG, **settings
    )
    (inner,) = listener.listeners
    print(listener.extra(SocketAttribute.local_port), flush=True)
    _log(
        listener=_usages(inner, SETTING_NAMES),
        engine=inner.extra(TuningAttribute.engine).name,
        nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    )
    handler = quiet(HANDLERS[mode])
    first = True
    watched: set[SocketStream] = set()  # sink mode: streams whose receives are sampled

    async def serve_one(stream: SocketStream) -> None:
        nonlocal first
        if first:
            first = False
            _log(first_stream=_usages(stream, SETTING_NAMES[1:]))
        if mode != "sink":
            await handler(stream)
            return
        watched.add(stream)
        try:
            await handler(stream)
        finally:
            watched.discard(stream)

    async def monitor() -> None:
        """Log each new peak of the accept pool (connections accepted ahead) and,
        in sink mode, of the receives posted on one stream (recvburst in_use)."""
        peaks = {"backlog": 0, "recvburst": 0}
        while True:
            now = {"backlog": inner.extra(TuningAttribute.backlog).in_use, "recvburst": 0}
            for stream in watched:
                in_use = stream.extra(TuningAttribute.recvburst, None)
                if in_use is not None:  # None once closed
                    now["recvburst"] = max(now["recvburst"], in_use.in_use)
            for name, value in now.items():
                if value > peaks[name]:
                    peaks[name] = value
                    _log(**{f"peak_{name}_in_use": value})
            await anyio.sleep(MONITOR_SECONDS)

    async with anyio.create_task_group() as tg:
        tg.start_soon(monitor)
        await listener.serve(serve_one)


# -- sender process (bulk) ----------------------------------------------------


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _send(port: int, seconds: float, sendcap: int) -> None:
    payload = bytes(CHUNK)  # immutable: write-behind sends need no copy
    stream: SocketStream = await anyio_iocp.connect_tcp(HOST, port, sendcap=sendcap)
    settings = _usages(stream, SETTING_NAMES[1:])
    cpu0 = _cpu_self()
    sent = 0
    started = time.monotonic()
    deadline = started + seconds
    async with stream:
        while time.monotonic() < deadline:
            await stream.send(payload)
            sent += CHUNK
        written = time.monotonic()
        await stream.send_eof()
        try:  # the sink closes once it has read everything
            while True:
                await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    finished = time.monotonic()
    print(
        json.dumps(
            {
                "bytes": sent,
                "write_s": round(written - started, 3),
                "drain_s": round(finished - written, 3),
                "mb_per_s": round(sent / (finished - started) / 1e6, 1),
                "sender_cpu_s": round(_cpu_self() - cpu0, 2),
                "sender_settings": settings,
            }
        ),
        flush=True,
    )


# -- driver -------------------------------------------------------------------


#: test -> the result key whose median run is reported
PRIMARY = {"bulk": "mb_per_s", "storm": "elapsed_s", "churn": "exchanges_per_s"}


@dataclass
class Run:
    result: dict[str, Any] = field(default_factory=dict)  # sender's or loadgen's JSON
    server_log: dict[str, Any] = field(default_factory=dict)  # the server's JSON lines
    server_cpu_s: float | None = None
    error: str | None = None


@dataclass
class Case:
    test: str  # bulk | storm | churn
    name: str
    server_mode: str
    server_settings: dict[str, Any]
    client: str  # what loads it, for the table
    sendcap: int = 1  # bulk sender only
    runs: list[Run] = field(default_factory=list)

    def good_runs(self) -> list[Run]:
        return [r for r in self.runs if r.error is None and PRIMARY[self.test] in r.result]

    def median_run(self) -> Run:
        """The run with the median primary value (the last run if none succeeded)."""
        good = sorted(self.good_runs(), key=lambda r: float(r.result[PRIMARY[self.test]]))
        return good[(len(good) - 1) // 2] if good else self.runs[-1]


def cases(parts: list[str], storm_n: int) -> list[Case]:
    out: list[Case] = []
    if "bulk" in parts:
        for sendcap, recvburst in ((1, 1), (1, 20), (20, 1), (20, 20)):
            out.append(
                Case(
                    "bulk",
                    f"sendcap {sendcap}, recvburst {recvburst}",
                    "sink",
                    {"recvburst": recvburst},
                    f"iocp sender, sendcap {sendcap}, 1 conn",
                    sendcap=sendcap,
                )
            )
    if "storm" in parts:
        for backlog in (10, 500):
            out.append(
                Case(
                    "storm",
                    f"backlog {backlog}",
                    "hello",
                    {"backlog": backlog},
                    f"loadgen storm {storm_n:,}",
                )
            )
    if "churn" in parts:
        for name, settings in (("defaults", {}), ('profile "httpd"', {"profile": "httpd"})):
            out.append(Case("churn", name, "hello", settings, "loadgen churn, 16 loops"))
    return out


def _server_command(case: Case) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "server",
        case.server_mode,
        json.dumps(case.server_settings),
    ]


def _read_server_log(path: Path) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return merged
    for line in lines:
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                merged.update(json.loads(line))
    return merged


def _run_sender(port: int, seconds: float, sendcap: int, where: Placement) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "sender",
        str(port),
        str(seconds),
        str(sendcap),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 60.0,
        check=False,
        preexec_fn=pin_to(where.loadgen),
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = " | ".join(done.stderr.strip().splitlines()[-2:])
        raise RuntimeError(f"sender exited {done.returncode}: {tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def run_case(
    case: Case, args: argparse.Namespace, loadgen: Path, where: Placement, log_dir: Path
) -> Run:
    slug = case.name.replace(" ", "").replace(",", "-").replace('"', "")
    log_path = log_dir / f"tuning-{case.test}-{slug}.log"
    load: Callable[[int], dict[str, Any]]
    if case.test == "bulk":

        def load(port: int) -> dict[str, Any]:
            return _run_sender(port, args.seconds, case.sendcap, where)

    elif case.test == "storm":

        def load(port: int) -> dict[str, Any]:
            storm = ["storm", HOST, str(port), str(args.storm), str(args.storm_timeout)]
            return run_load(loadgen, storm, args.storm_timeout + 30.0, where.loadgen)

    else:

        def load(port: int) -> dict[str, Any]:
            churn = ["churn", HOST, str(port), "16", str(args.seconds)]
            return run_load(loadgen, churn, args.seconds + 60.0, where.loadgen)

    run = Run()
    try:
        with running_server(_server_command(case), log_path, where.server) as server:
            cpu_before = cpu_seconds(server.proc.pid)
            run.result = load(server.port)
            run.server_cpu_s = cpu_seconds(server.proc.pid) - cpu_before
            if server.proc.poll() is not None:
                raise ServerError(f"server died during the run: {log_tail(log_path)}")
    except (ServerError, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
    run.server_log = _read_server_log(log_path)
    return run


def _settings_text(case: Case, run: Run) -> str:
    listener = run.server_log.get("listener")
    if not listener:
        return "?"
    text = "/".join(str(listener[name][0]) for name in SETTING_NAMES)
    stream = run.server_log.get("first_stream")
    if stream and case.test == "bulk":
        text += f" (stream recvburst {stream['recvburst'][0]})"
    return text


def _failures(result: dict[str, Any]) -> str:
    kinds = result.get("failures_by_kind") or {}
    shown = ", ".join(f"{k} {v:,}" for k, v in kinds.items() if v)
    return f"{result.get('failures', 0):,} failed" + (f" ({shown})" if shown else "")


def _spread(case: Case, fmt: str) -> str:
    """The primary value's range over the runs, when there were several."""
    values = [float(r.result[PRIMARY[case.test]]) for r in case.good_runs()]
    if len(case.runs) < 2:
        return ""
    failed = len(case.runs) - len(values)
    text = f" [{format(min(values), fmt)}-{format(max(values), fmt)}]" if values else ""
    return text + (f" ({failed} run(s) failed)" if failed else "")


def _result_cells(case: Case, run: Run) -> tuple[str, str]:
    """(result, work per server CPU-s)."""
    r, cpu = run.result, run.server_cpu_s
    if case.test == "bulk":
        per = f"{r['bytes'] / 1e6 / cpu:,.0f} MB" if cpu else "-"
        sent = r.get("sender_settings", {}).get("sendcap", ["?"])[0]
        peak = run.server_log.get("peak_recvburst_in_use", 0)
        return (
            f"{r['mb_per_s']:,.0f} MB/s{_spread(case, ',.0f')}, drain {r['drain_s']:.2f} s; "
            f"sender CPU {r['sender_cpu_s']:.2f} s (sendcap {sent}); "
            f"sink receives posted: peak {peak}",
            per,
        )
    if case.test == "storm":
        peak = run.server_log.get("peak_backlog_in_use", 0)
        return (
            f"{r['answered']:,} answered, {_failures(r)}, "
            f"{r['elapsed_s']:.2f} s{_spread(case, '.2f')}; accept pool peak {peak}",
            f"{r['answered'] / cpu:,.0f} answered" if cpu else "-",
        )
    per = f"{r['exchanges'] / cpu:,.0f} exchanges" if cpu else "-"
    return (
        f"{r['exchanges_per_s']:,.0f} exchanges/s{_spread(case, ',.0f')}, {_failures(r)}",
        per,
    )


def markdown_table(all_cases: list[Case]) -> str:
    lines = [
        "| test | case | server backlog/sendcap/recvburst/buffersize | load | result "
        "| server CPU s | per server CPU-s |",
        "|---|---|---|---|---|---:|---:|",
    ]
    for case in all_cases:
        run = case.median_run()
        if run.error is not None:
            result, per, cpu = f"error: {run.error}", "-", "-"
        else:
            result, per = _result_cells(case, run)
            cpu = "-" if run.server_cpu_s is None else f"{run.server_cpu_s:.2f}"
        row = [case.test, case.name, _settings_text(case, run), case.client, result, cpu, per]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=4.0, help="bulk and churn duration")
    p.add_argument("--storm", type=int, default=20000, metavar="N")
    p.add_argument("--storm-timeout", type=float, default=30.0)
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per case, interleaved; the median run is reported (default %(default)s)",
    )
    p.add_argument("--parts", default="bulk,storm,churn", help="comma-separated subset")
    p.add_argument(
        "--pin",
        choices=PIN_MODES,
        default="split",
        help="server on the last CPU, load on the first (split, default), both on the "
        "last (same), or unpinned (none)",
    )
    p.add_argument("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    p.add_argument("--json", type=Path, metavar="FILE", help="save raw results here")
    return p.parse_args(argv)


def driver(argv: list[str]) -> int:
    args = parse_args(argv)
    parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    where = placement(args.pin)
    loadgen = build_programs(args.build_dir)["loadgen"]
    log_dir = args.build_dir / "logs"
    storm_note = ""
    if "storm" in parts:
        # Server and loadgen each hold every storm connection at once, plus a
        # few descriptors of their own; they inherit this process's limits.
        nofile = raise_nofile(args.storm + NOFILE_MARGIN)
        if nofile < args.storm + NOFILE_MARGIN:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            storm_note = (
                f"Note: storm N lowered from {args.storm:,} to {nofile - NOFILE_MARGIN:,}: "
                f"RLIMIT_NOFILE hard limit is {hard} and this process may not raise it "
                "(no CAP_SYS_RESOURCE); a server holding N connections needs N + a few "
                "descriptors, and dies on accept EMFILE."
            )
            args.storm = nofile - NOFILE_MARGIN
            print(f"# {storm_note}", file=sys.stderr, flush=True)
    all_cases = cases(parts, args.storm)
    started = time.monotonic()
    for rep in range(args.repeat):
        for case in all_cases:
            print(f"# [{rep + 1}/{args.repeat}] {case.test}: {case.name}", file=sys.stderr)
            run = run_case(case, args, loadgen, where, log_dir)
            case.runs.append(run)
            print(f"#   {run.error or json.dumps(run.result)}", file=sys.stderr, flush=True)
    elapsed = time.monotonic() - started

    print(markdown_table(all_cases))
    print()
    print(machine_line())
    print(f"Command: `{shlex.join([sys.executable, *sys.argv])}` ({elapsed:.0f} s)")
    print(
        f"Each case: fresh server and client processes; {args.repeat} run(s) interleaved, "
        "the median run shown with the [min-max] of its main figure"
    )
    server_cpus = "any" if where.server is None else ",".join(map(str, sorted(where.server)))
    load_cpus = "any" if where.loadgen is None else ",".join(map(str, sorted(where.loadgen)))
    print(
        f"Placement: --pin {args.pin} (server CPUs {server_cpus}, sender/loadgen CPUs "
        f"{load_cpus}); engine io_uring forced in every iocp process"
    )
    somaxconn = read_somaxconn()
    storms = [c for c in all_cases if c.test == "storm"]
    if storms:
        server_nofile = storms[0].median_run().server_log.get("nofile")
        print(
            f"Storm: listen() asked for {LISTEN_BACKLOG}, net.core.somaxconn={somaxconn} "
            f"caps the kernel accept queue at {min(LISTEN_BACKLOG, somaxconn or LISTEN_BACKLOG)}; "
            f"server RLIMIT_NOFILE {server_nofile}"
        )
    if storm_note:
        print(storm_note)
    if args.json is not None:
        raw = {
            "command": shlex.join([sys.executable, *sys.argv]),
            "machine": machine_line(),
            "cases": [asdict(c) for c in all_cases],
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n")
    return 0


def _run(function: Callable[..., Awaitable[None]], *args: Any) -> int:
    anyio.run(function, *args, backend="iocp", backend_options=RUN_OPTIONS)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["server"]:
        raise_nofile(NOFILE_WANTED)
        return _run(_serve, argv[1], json.loads(argv[2]))
    if argv[:1] == ["sender"]:
        return _run(_send, int(argv[1]), float(argv[2]), int(argv[3]))
    return driver(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
