"""The user-space instructions per unit of work from two callgrind runs of
different lengths: (large run's total - small run's) / (large - small), so
that start-up, imports and the end of the run cancel out.

    python bench/callgrind_diff.py SMALL_OUT LARGE_OUT SMALL LARGE UNIT

Used by ``bench/hello_cost.sh`` and ``bench/wake_cost.sh``.
"""

from __future__ import annotations

import sys


def total(path: str) -> int:
    """The ``summary:`` line of a callgrind output file."""
    with open(path) as out:
        for line in out:
            if line.startswith("summary:"):
                return int(line.split()[1])
    raise SystemExit(f"no summary in {path}")


def main(argv: list[str]) -> None:
    small_out, large_out, small, large, unit = argv
    per = (total(large_out) - total(small_out)) / (int(large) - int(small))
    print(f"user-space instructions per {unit}: {per / 1000:.1f} K")


if __name__ == "__main__":
    main(sys.argv[1:])
