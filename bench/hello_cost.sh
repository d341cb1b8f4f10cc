#!/usr/bin/env bash
# What one exchange of the demo's hello phase costs (connect, hello, hello
# back, close; clients and server in one process, as in the demo), in figures
# the machine's load does not move: user-space instructions (valgrind's
# callgrind) and system calls by name (perf's syscall tracepoints).
#
# usage: PYTHON=.venv/bin/python bash bench/hello_cost.sh BACKEND [ENGINE]
#   BACKEND: trio, asyncio or iocp; ENGINE: the iocp engine (io_uring,
#   readiness; default: the one detected)
# Each figure is the difference between a run of LARGE exchanges and one of
# SMALL (defaults 900 and 300 under callgrind, 1800 and 600 under perf),
# divided by the difference: start-up, imports and the end of the run cancel
# out.  Needs valgrind, and Debian's linux-perf with root or
# perf_event_paranoid <= 1.  The package is the one PYTHON imports
# (scripts/setup.sh installs it into .venv; PYTHONPATH=. picks the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:?usage: bench/hello_cost.sh BACKEND [ENGINE]}
engine=${2:-}
py=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# one run of the hello phase with N exchanges; fails if any exchange failed
cat >"$work/hello.py" <<'PY'
import dataclasses, sys
import anyio
sys.path.append(".")
import demo
backend, engine, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sizes = dataclasses.replace(demo.DEFAULT_SIZES, hello_exchanges=n)
options = {"engine": engine} if engine else {}
async def main() -> None:
    failures: list[str] = []
    await demo.run_hello(sizes, failures)
    if failures:
        sys.exit(f"hello failed: {failures[:3]}")
anyio.run(main, backend=backend, **({"backend_options": options} if options else {}))
PY

small=${SMALL:-300} large=${LARGE:-900}
for n in "$small" "$large"; do
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.$n" \
        "$py" "$work/hello.py" "$backend" "$engine" "$n" >/dev/null 2>"$work/cg.$n.err" \
        || { cat "$work/cg.$n.err" >&2; exit 1; }
done
"$py" bench/callgrind_diff.py "$work/cg.$small" "$work/cg.$large" "$small" "$large" "exchange"

small=$((small * 2)) large=$((large * 2))
for n in "$small" "$large"; do
    perf stat -x, -e 'syscalls:sys_enter_*' -o "$work/sc.$n" \
        "$py" "$work/hello.py" "$backend" "$engine" "$n" >/dev/null
done
"$py" - "$work/sc.$small" "$work/sc.$large" "$small" "$large" <<'PY'
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
print(f"system calls per exchange: {sum(calls.values()):.2f} ({shown})")
PY
echo "backend: $backend${engine:+ ($engine)}; $py"
