"""What one trip through the scheduler costs on each backend.

A task yields N times in a row (``trio.lowlevel.cancel_shielded_checkpoint``:
each yield is one scheduler pass, with Trio's I/O wait at timeout 0), with a
TCP listener open so that the iocp backend's engine exists and its per-pass
work runs (the hooks around Trio's I/O wait: submission, reaping, the
schedule budget's new pass).  The difference from Trio's figure is what the
engine adds to every pass; in strict mode an echoed message takes two passes.

    .venv/bin/python bench/pass_cost.py --rounds 5

Prints, per backend, the median time per pass over interleaved rounds, the
range, and the difference from Trio's median.  ``PYTHONPATH`` picks the
package to measure (two checkouts: two interleaved invocations).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import anyio
from trio import lowlevel

#: name -> (AnyIO backend, backend options)
BACKENDS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "trio": ("trio", None),
    "iocp-io_uring": ("iocp", {"engine": "io_uring"}),
    "iocp-readiness": ("iocp", {"engine": "readiness"}),
}


async def passes(count: int) -> float:
    """Nanoseconds per pass of ``count`` yields in a row."""
    async with await anyio.create_tcp_listener(local_host="127.0.0.1"):
        start = time.perf_counter()
        for _ in range(count):
            await lowlevel.cancel_shielded_checkpoint()
        return (time.perf_counter() - start) / count * 1e9


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--passes", type=int, default=200_000, help="yields per run")
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated, from: {', '.join(BACKENDS)} (default all)",
    )
    args = parser.parse_args(argv)
    names = [n for n in args.backends.split(",") if n]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        parser.error(f"--backends {args.backends!r}: expected some of {', '.join(BACKENDS)}")
    if args.rounds < 1 or args.passes < 1:
        parser.error("--rounds and --passes must be at least 1")
    runs: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            backend, options = BACKENDS[name]
            ns = anyio.run(passes, args.passes, backend=backend, backend_options=options)
            runs[name].append(ns)
    trio_median = statistics.median(runs["trio"]) if "trio" in runs else None
    print(f"ns per scheduler pass ({args.rounds} interleaved rounds of {args.passes:,} yields)")
    for name, values in runs.items():
        median = statistics.median(values)
        extra = f"  {median - trio_median:+,.0f} vs trio" if trio_median is not None else ""
        spread = f"{min(values):,.0f}-{max(values):,.0f}"
        print(f"  {name:15} median {median:7,.0f}  range {spread}{extra}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
