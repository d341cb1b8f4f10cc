"""One phase of the demo (hello, echo or bulk), on several of its columns,
in interleaved rounds: a closer look at a phase than ``demo.py`` gives.

Each run is one ``anyio.run`` of the phase in this process, with the demo's
default sizes and data; a round runs every column once, in order.  Prints,
per column, the median rate with its range and the median process CPU time
(clients and servers share the thread, as in the demo).  Each column first
runs once empty, so that no column's CPU counts the imports.

    .venv/bin/python bench/demo_phase.py echo --backends iocp,trio --rounds 5

``--concurrency 1`` runs the hello phase's exchanges one after another (the
demo runs 16 clients at once): each connect, accept and close is then on the
critical path, with no other connection's work to share its scheduler pass.

To compare two versions of the package, run it twice with ``PYTHONPATH``
set to each checkout (a ``git worktree``), interleaving the invocations.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio

# demo.py from the checkout; the package as installed (scripts/setup.sh), or from
# PYTHONPATH, which comes first
sys.path.append(str(Path(__file__).resolve().parent.parent))

import demo

PHASES = ("hello", "echo", "bulk")
#: one run of a phase: its rate; failed checks are added to the list
Phase = Callable[[list[str]], Awaitable[float]]


def phase_runner(phase: str, payload: demo.Payload, sizes: demo.Sizes) -> Phase:
    if phase == "hello":
        return lambda failures: demo.run_hello(sizes, failures)
    if phase == "echo":
        return lambda failures: demo.run_echo(sizes, payload, failures)
    return lambda failures: demo.run_bulk(sizes, payload, failures)


def run_once(
    column: demo.Column, phase: Callable[[list[str]], Awaitable[float]]
) -> tuple[float, float]:
    """(rate, process CPU seconds) of one run; a failed check raises."""
    failures: list[str] = []

    async def main() -> float:
        return await phase(failures)

    cpu = time.process_time()
    rate = anyio.run(main, backend=column.backend, backend_options=column.options or None)
    cpu = time.process_time() - cpu
    if failures:
        raise SystemExit(f"{column.key}: the phase's check failed: {failures[0]}")
    return rate, cpu


def warm_up(column: demo.Column) -> None:
    """One empty run of ``column``: the first run of a backend in a process
    imports its modules (Trio, AnyIO's Trio backend and this package: about
    0.2 s of CPU here), which the first timed run's CPU would count."""

    async def nothing() -> None:
        pass

    anyio.run(nothing, backend=column.backend, backend_options=column.options or None)


def add_column_options(parser: argparse.ArgumentParser) -> None:
    """``--backends`` (demo columns) and ``--rounds``, checked by :func:`chosen_columns`."""
    parser.add_argument(
        "--backends",
        default="iocp,trio",
        help=f"comma-separated demo columns, from: {', '.join(demo.COLUMNS)} (default iocp,trio)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")


def chosen_columns(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """The column keys of ``--backends``; a bad ``--backends`` or ``--rounds``
    ends the program with a usage error."""
    keys = [k for k in args.backends.split(",") if k]
    unknown = [k for k in keys if k not in demo.COLUMNS]
    if unknown or not keys:
        parser.error(f"--backends {args.backends!r}: expected some of {', '.join(demo.COLUMNS)}")
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: expected at least 1")
    return keys


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=PHASES)
    add_column_options(parser)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=demo.DEFAULT_SIZES.hello_concurrency,
        help="hello: clients at once (default %(default)s, as in the demo)",
    )
    args = parser.parse_args(argv)
    keys = chosen_columns(parser, args)
    if args.concurrency < 1:
        parser.error(f"--concurrency {args.concurrency}: expected at least 1")
    sizes = dataclasses.replace(demo.DEFAULT_SIZES, hello_concurrency=args.concurrency)
    phase = phase_runner(args.phase, demo.make_payload(sizes, args.seed), sizes)
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in keys}
    for key in keys:  # (imports paid here, not in the first column's CPU)
        warm_up(demo.COLUMNS[key])
    for _ in range(args.rounds):
        for key in keys:
            runs[key].append(run_once(demo.COLUMNS[key], phase))
    unit = "MB/s" if args.phase == "bulk" else "/s"
    clients = f"{args.concurrency} clients at once; " if args.phase == "hello" else ""
    print(f"{args.phase} ({clients}{args.rounds} interleaved rounds; {sys.executable})")
    for key, values in runs.items():
        rates = [rate for rate, _ in values]
        cpu = statistics.median(c for _, c in values)
        print(
            f"  {key:15} median {statistics.median(rates):>10,.0f} {unit}"
            f"  range {min(rates):,.0f}-{max(rates):,.0f}  CPU {cpu:.2f} s"
            f"  runs {', '.join(f'{r:,.0f}' for r in rates)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
