#!/usr/bin/env bash
# User-space instructions the server executes per unit of work, counted by
# valgrind's callgrind: a figure that does not move with the load of a shared
# machine, unlike times.  Kernel work (system calls, io_uring's task work) is
# not counted, so compare backends with it only next to the timed benchmark.
#
# usage: bench/callgrind.sh BACKEND TEST [SECONDS]
#   BACKEND: any backend of bench/server_app.py (trio, iocp, iocp-single, ...)
#   TEST:    echo1 (1 connection, 64-byte ping-pong), echo64 (64 connections),
#            churn (connect, hello, hello back, close; 16 at once),
#            http (the h11 mode under wrk, 64 keep-alive connections; per request)
# Needs valgrind, and bench/.build/loadgen (built by bench/run.py); wrk for http.  Counting
# starts once the server listens (start-up and imports are not counted) and
# stops when the load ends.  Under callgrind the server runs some 50 times
# slower, so it finds more work waiting per scheduler pass than at full speed.
# The iocp backends' budget (schedule points on a budget) is wall-clock time:
# under the slowdown 1 ms covers some 50 times less work, so calls yield more
# often than at full speed.  ANYIO_IOCP_BUDGET=0.05 scales it to the slowdown;
# the output line names the budget in use (docs/performance.md compares both).
# KEEP=FILE keeps the counts (callgrind's output) there, for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=$1 test=$2 seconds=${3:-4}
py=${PYTHON:-python3}
. bench/echo_server.sh
test_load "$test"
work=$(mktemp -d)
trap 'kill $vg 2>/dev/null || true; rm -rf "$work"' EXIT
taskset -c 1 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$work/cg.out" "$py" bench/server_app.py "$backend" "$mode" \
    >"$work/port" 2>"$work/valgrind.log" &
vg=$!
for _ in $(seq 300); do [ -s "$work/port" ] && break; sleep 0.2; done
port=$(head -1 "$work/port")
callgrind_control -i on "$vg" >/dev/null 2>&1
# (wrk's own timeout, 2 s, is too short for a server slowed down this much)
run_load 1 "$seconds" --timeout 60s >"$work/load.json"
callgrind_control -d "$vg" >/dev/null 2>&1  # dumps what was counted to cg.out.1
kill "$vg"
wait "$vg" 2>/dev/null || true
if [ -n "${KEEP:-}" ]; then cp "$work/cg.out.1" "$KEEP"; fi
"$py" - "$backend" "$test" "$work/load.json" "$work/cg.out.1" <<'PY'
import json, os, sys
backend, test, load, dump = sys.argv[1:]
result = json.load(open(load))
units = result.get("exchanges") or result.get("ops") or result.get("requests")
total = next(int(line.split()[1]) for line in open(dump) if line.startswith("summary:"))
name = {"churn": "exchange", "http": "request"}.get(test, "message")
if backend == "iocp-strict" or os.environ.get("ANYIO_IOCP_SCHEDULE") == "strict":
    schedule = "; strict schedule"
elif backend.startswith("iocp"):
    schedule = f"; budget {(os.environ.get('ANYIO_IOCP_BUDGET') or '').strip() or '0.001 (default)'} s"
else:
    schedule = ""
print(f"{backend} {test}: {total / units / 1000:.1f} K instructions per {name} "
      f"({units} {name}s counted{schedule})")
PY
