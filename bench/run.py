"""Benchmark driver: every test against every backend, then a markdown table.

Usage: python bench/run.py [--backends floor,trio,...] [--tests echo1,...]
                           [--seconds 5] [--storm 3000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from chart import write_chart
from compile_c import DEFAULT_BUILD_DIR, build_programs
from measure import Outcome, measure
from pinning import PIN_MODES, Placement, placement
from report import Results, machine_line, markdown_table, notes, read_somaxconn
from scenarios import SCENARIOS, Settings
from servers import FLOORS
from targets import target_lines

ALL_BACKENDS = ["floor", "asyncio", "asyncio+uvloop", "trio", "iocp"]
#: also accepted by --backends, for comparing steps (see server_app.py)
EXTRA_BACKENDS = [
    "floor-uring",
    "iocp-single",
    "iocp-readiness",
    "iocp-httpd",
    "iocp-strict",
    "iocp-ring",
    "iocp-direct",
    "iocp-nospin",
]


def _list(choices: list[str]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        items = [x.strip() for x in text.split(",") if x.strip()]
        unknown = [x for x in items if x not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)}")
        return items

    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = p.add_argument
    add(
        "--backends",
        type=_list(ALL_BACKENDS + EXTRA_BACKENDS),
        default=ALL_BACKENDS,
        help=f"comma-separated (default {','.join(ALL_BACKENDS)}; also "
        f"{', '.join(EXTRA_BACKENDS)})",
    )
    add(
        "--tests",
        type=_list(list(SCENARIOS)),
        default=list(SCENARIOS),
        help=f"comma-separated (default {','.join(SCENARIOS)})",
    )
    add(
        "--seconds",
        type=float,
        default=Settings.seconds,
        help="duration of each timed test (default %(default)s)",
    )
    add(
        "--storm",
        type=int,
        default=Settings.storm_n,
        metavar="N",
        help="connections opened at once by the storm test (default %(default)s)",
    )
    add(
        "--idle",
        type=int,
        default=Settings.idle_n,
        metavar="N",
        help="connections held idle by the idle test (default %(default)s)",
    )
    add(
        "--msgsize",
        type=int,
        default=Settings.msgsize,
        help="echo message size in bytes (default %(default)s)",
    )
    add(
        "--churn-concurrency",
        type=int,
        default=Settings.churn_concurrency,
        help="concurrent connect/exchange/close loops (default %(default)s)",
    )
    add(
        "--bulk-conns",
        type=int,
        default=Settings.bulk_conns,
        help="connections writing to the sink (default %(default)s)",
    )
    add(
        "--http-conns",
        type=int,
        default=Settings.http_conns,
        help="wrk's keep-alive connections in the http test (default %(default)s)",
    )
    add(
        "--pin",
        type=pin_modes,
        default=("same",),
        metavar="MODE[,MODE]",
        help="CPU placement of server and loadgen, see pinning.py: "
        f"{', '.join(PIN_MODES)}, or several (e.g. same,split: both placements "
        "in one run, interleaved, one table each; default same)",
    )
    add(
        "--repeat",
        type=int,
        default=1,
        help="runs per backend and test, interleaved; the median run is reported",
    )
    add(
        "--python", default=sys.executable, help="interpreter for server_app.py (default: this one)"
    )
    add("--build-dir", type=Path, default=DEFAULT_BUILD_DIR)
    add("--json", type=Path, metavar="FILE", help="save raw results (every run) here")
    add("--chart", type=Path, metavar="PNG", help="write a chart of the table here (matplotlib)")
    add(
        "--fail-on-error",
        action="store_true",
        help="exit with status 1 if any run failed (a server that did not start, a "
        "missing tool): for smoke runs",
    )
    return p.parse_args(argv)


def pin_modes(value: str) -> tuple[str, ...]:
    """``--pin``'s value: one placement or several, comma-separated."""
    modes = tuple(dict.fromkeys(m.strip() for m in value.split(",") if m.strip()))
    unknown = [m for m in modes if m not in PIN_MODES]
    if not modes or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown placement {', '.join(map(repr, unknown)) or repr(value)}: "
            f"expected one or more of {', '.join(PIN_MODES)}, comma-separated"
        )
    return modes


def median_run(runs: list[Outcome], key: str) -> Outcome:
    """The run whose `key` value is the median (an error run if all failed)."""
    good = [o for o in runs if o.error is None and key in o.load]
    if not good:
        return runs[-1]
    good.sort(key=lambda o: float(o.load[key]))
    return good[(len(good) - 1) // 2]


def _cpus(cpus: frozenset[int] | None) -> str:
    return "any" if cpus is None else ",".join(map(str, sorted(cpus)))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    settings = Settings(
        seconds=args.seconds,
        msgsize=args.msgsize,
        churn_concurrency=args.churn_concurrency,
        bulk_conns=args.bulk_conns,
        http_conns=args.http_conns,
        storm_n=args.storm,
        idle_n=args.idle,
    )
    placements = {mode: placement(mode) for mode in args.pin}
    binaries = build_programs(args.build_dir)
    log_dir = args.build_dir / "logs"

    # every placement, backend and test once per repetition, interleaved, so
    # that a change of the machine's load falls on all of them alike
    runs: dict[tuple[str, str, str], list[Outcome]] = {}
    for rep in range(args.repeat):
        for mode, where in placements.items():
            for backend in args.backends:
                for test in args.tests:
                    if backend in FLOORS and not SCENARIOS[test].has_floor:
                        continue  # the C floor does not speak this protocol
                    print(
                        f"# [{rep + 1}/{args.repeat}] --pin {mode} {backend} {test}",
                        file=sys.stderr,
                    )
                    outcome = measure(
                        backend, SCENARIOS[test], settings, binaries, args.python, where, log_dir
                    )
                    runs.setdefault((mode, backend, test), []).append(outcome)
                    print(f"#   {outcome.error or json.dumps(outcome.load)}", file=sys.stderr)

    command = shlex.join([sys.executable, *sys.argv])
    for number, (mode, where) in enumerate(placements.items()):
        results: Results = {
            (backend, test): median_run(rs, SCENARIOS[test].primary)
            for (m, backend, test), rs in runs.items()
            if m == mode
        }
        if len(placements) > 1:
            if number:
                print()
            print(f"## --pin {mode}")
            print()
        report(args, results, mode, where, command)
    if args.json is not None:
        raw = {
            "command": command,
            "machine": machine_line(),
            "pin": list(args.pin),
            "settings": asdict(settings),
            "runs": [{"pin": m, **asdict(o)} for (m, _b, _t), rs in runs.items() for o in rs],
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n")
    failed = sorted({f"{b} {t}" for (_m, b, t), rs in runs.items() if any(o.error for o in rs)})
    if failed and args.fail_on_error:
        print(f"failed runs: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def report(
    args: argparse.Namespace, results: Results, mode: str, where: Placement, command: str
) -> None:
    """One placement's table, notes and targets."""
    print(markdown_table(results, args.backends, args.tests))
    print()
    print(machine_line())
    print(f"Command: `{command}`")
    print(
        f"Placement: --pin {mode} (server CPUs {_cpus(where.server)}, "
        f"loadgen CPUs {_cpus(where.loadgen)}); median of {args.repeat} run(s)"
    )
    somaxconn = read_somaxconn()
    if "storm" in args.tests and somaxconn is not None and somaxconn < args.storm:
        print(
            f"Note: net.core.somaxconn={somaxconn} caps the listen backlog below "
            f"--storm {args.storm}."
        )
    for line in notes(results.values()):
        print(line)
    print()
    print("Targets (issues 6 and 14), from this run:")
    print()
    for line in target_lines(results):
        print(line)
    if args.chart is not None:
        chart = (
            args.chart if len(args.pin) == 1 else args.chart.with_stem(f"{args.chart.stem}-{mode}")
        )
        if write_chart(results, args.backends, chart, machine_line()):
            print(f"\nChart: {chart}")
        else:
            print("\nChart: not written (needs matplotlib and a trio column)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
