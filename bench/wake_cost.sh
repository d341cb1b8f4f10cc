#!/usr/bin/env bash
# What parking a task and waking it costs on the iocp backend, in user-space
# instructions (valgrind's callgrind), a figure the machine's load does not
# move: two tasks wake each other through the package's Spot (a Parked waited
# on many times, as a stream's multishot receiver is: the way a receive that
# waits is woken by its completion), each round trip being two parks, two
# wakes and two scheduler passes.  (Before the sixteenth pass it used Parked,
# which was then the receivers' class.)
#
# usage: PYTHON=.venv/bin/python bash bench/wake_cost.sh [ENGINE]
#   ENGINE: io_uring or readiness (default: the one detected); the engine's
#   per-pass hooks run in every pass, as in a server
# The figure is the difference between a run of LARGE round trips and one of
# SMALL (defaults 40000 and 20000), divided by the difference: start-up,
# imports and the end of the run cancel out.  The package is the one PYTHON
# imports (PYTHONPATH picks another copy, to compare two versions).
set -euo pipefail
cd "$(dirname "$0")/.."
engine=${1:-}
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat >"$work/wake.py" <<'PY'
import sys
import anyio
from anyio_iocp._interface.parking import Spot
engine, n = sys.argv[1], int(sys.argv[2])

async def main() -> None:
    ping, pong = Spot(), Spot()

    async def ponger() -> None:
        for _ in range(n):
            await pong.wait()
            ping.wake()

    async with anyio.create_task_group() as tg:
        tg.start_soon(ponger)
        while pong.task is None:  # parked before the first wake
            await anyio.lowlevel.checkpoint()
        for _ in range(n):
            pong.wake()
            await ping.wait()

anyio.run(main, backend="iocp", backend_options={"engine": engine} if engine else None)
PY

small=${SMALL:-20000} large=${LARGE:-40000}
for n in "$small" "$large"; do
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$n" \
        "$py" "$work/wake.py" "$engine" "$n" >/dev/null 2>"$work/cg.$n.err" \
        || { cat "$work/cg.$n.err" >&2; exit 1; }
done
"$py" bench/callgrind_diff.py "$work/cg.$small" "$work/cg.$large" "$small" "$large" "round trip (2 parks, 2 wakes)"
echo "engine: ${engine:-detected}; $py"
