#!/usr/bin/env bash
# What one exchange of the demo's hello phase costs (connect, hello, hello
# back, close; clients and server in one process, as in the demo), or, with
# PHASE=echo, one message of its echo phase (16 connections, messages of
# 1 B to 64 KiB that come back and are checked), in figures the machine's
# load does not move: user-space instructions (valgrind's callgrind) and
# system calls by name (perf's syscall tracepoints).
#
# usage: PYTHON=.venv/bin/python [PHASE=echo] bash bench/hello_cost.sh BACKEND [ENGINE]
#   BACKEND: trio, asyncio or iocp; ENGINE: the iocp engine (io_uring,
#   readiness; default: the one detected)
# Each figure is the difference between a run of LARGE exchanges and one of
# SMALL (defaults 900 and 300 under callgrind, 1800 and 600 under perf; for
# echo, messages per connection: 600 and 200, then 1200 and 400), divided by
# the difference: start-up, imports and the end of the run cancel out.  The
# echo runs send the same messages, the shorter one a prefix of the longer.
# The iocp budget is wall-clock time: CALLGRIND_BUDGET=0.05 scales it to
# callgrind's slowdown for the callgrind runs only (bench/callgrind.sh says
# why); the perf runs, at full speed, keep ANYIO_IOCP_BUDGET as it is (the
# default unless it is set).  Needs valgrind, and
# Debian's linux-perf with root or perf_event_paranoid <= 1.  The package is
# the one PYTHON imports (scripts/setup.sh installs it into .venv;
# PYTHONPATH=. picks the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:?usage: bench/hello_cost.sh BACKEND [ENGINE]}
engine=${2:-}
py=${PYTHON:-python3}
phase=${PHASE:-hello}
case "$phase" in
    hello) unit=exchange per_n=1 small=${SMALL:-300} large=${LARGE:-900} ;;
    # (per connection; the demo's 16 connections each send them)
    echo) unit=message per_n=16 small=${SMALL:-200} large=${LARGE:-600} ;;
    *) echo "PHASE must be hello or echo (got '$phase')" >&2; exit 2 ;;
esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# one run of the phase with N exchanges (hello) or N messages per connection
# (echo), the longest run having MOST; fails if any check failed
cat >"$work/hello.py" <<'PY'
import dataclasses, sys
import anyio
sys.path.append(".")
import demo
phase, backend, engine, n, most = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
options = {"engine": engine} if engine else {}
async def main() -> None:
    failures: list[str] = []
    if phase == "echo":
        sizes = dataclasses.replace(demo.DEFAULT_SIZES, echo_messages=n)
        payload = demo.make_payload(dataclasses.replace(sizes, echo_messages=most), 20240601)
        plans = tuple(plan[:n] for plan in payload.echo_plans)  # the same messages
        await demo.run_echo(sizes, dataclasses.replace(payload, echo_plans=plans), failures)
    else:
        await demo.run_hello(dataclasses.replace(demo.DEFAULT_SIZES, hello_exchanges=n), failures)
    if failures:
        sys.exit(f"{phase} failed: {failures[:3]}")
anyio.run(main, backend=backend, **({"backend_options": options} if options else {}))
PY

most=$((large * 2))
for n in "$small" "$large"; do
    ANYIO_IOCP_BUDGET=${CALLGRIND_BUDGET:-${ANYIO_IOCP_BUDGET:-}} \
        valgrind --tool=callgrind --callgrind-out-file="$work/cg.$n" \
        "$py" "$work/hello.py" "$phase" "$backend" "$engine" "$n" "$most" \
        >/dev/null 2>"$work/cg.$n.err" || { cat "$work/cg.$n.err" >&2; exit 1; }
done
"$py" bench/callgrind_diff.py "$work/cg.$small" "$work/cg.$large" \
    "$((small * per_n))" "$((large * per_n))" "$unit"

small=$((small * 2)) large=$((large * 2))
for n in "$small" "$large"; do
    perf stat -x, -e 'syscalls:sys_enter_*' -o "$work/sc.$n" \
        "$py" "$work/hello.py" "$phase" "$backend" "$engine" "$n" "$most" >/dev/null
done
"$py" - "$work/sc.$small" "$work/sc.$large" "$((small * per_n))" "$((large * per_n))" "$unit" <<'PY'
import sys
def counts(path):
    found = {}
    for line in open(path):
        fields = line.split(",")
        if len(fields) > 3 and fields[0].strip().isdigit():
            found[fields[2].split("sys_enter_")[-1]] = int(fields[0])
    return found
a, b = counts(sys.argv[1]), counts(sys.argv[2])
per = (int(sys.argv[4]) - int(sys.argv[3]))
calls = {name: (b.get(name, 0) - a.get(name, 0)) / per for name in b}
shown = ", ".join(f"{k} {v:.2f}" for k, v in sorted(calls.items(), key=lambda x: -x[1]) if v >= 0.05)
print(f"system calls per {sys.argv[5]}: {sum(calls.values()):.2f} ({shown})")
PY
echo "phase: $phase; backend: $backend${engine:+ ($engine)}; $py"
