#!/usr/bin/env bash
# Every system call the server makes per unit of work, by name, with the
# io_uring requests it submits and its CPU time (task-clock), from perf's
# tracepoints: where a connection's or a message's kernel entries go.
# usage: bench/syscall_mix.sh BACKEND TEST [SECONDS]
#   TEST: echo1, echo64 (per message) or churn (per exchange: connect, hello,
#   hello back, close; 16 at once).  Server on CPU 1, load generator on CPU 0
#   (LOAD_CPU=1: on the server's CPU, as bench/run.py's --pin same).
# Needs bench/.build/loadgen (built by bench/run.py), Debian's linux-perf, and
# root or perf_event_paranoid <= 1.  The CPU times (task-clock, and user and
# system time from /proc while the load runs) move with the machine's load;
# the counts much less.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=$1 test=$2 seconds=${3:-3}
py=${PYTHON:-python3}
. bench/echo_server.sh
test_load "$test"
start_server "$backend" "$mode"
perfout=$(mktemp) cpu=$(mktemp) result=$(mktemp)
cleanup_files+=("$perfout" "$cpu" "$result")
# counts the server's threads of the moment (the I/O runs on its main thread)
# until it is told to stop, once the load has ended
perf stat -x, -e 'syscalls:sys_enter_*' -e io_uring:io_uring_submit_req -e task-clock \
    -p "$srv" -o "$perfout" 2>/dev/null &
perf_pid=$!
sleep 0.3
server_ticks >"$cpu"
taskset -c "${LOAD_CPU:-0}" bench/.build/loadgen "${load[0]}" 127.0.0.1 "$port" "${load[@]:1}" "$seconds" \
    >"$result"
server_ticks >>"$cpu"
kill -INT $perf_pid
wait $perf_pid || true
"$py" - "$backend" "$test" "$result" "$perfout" "$cpu" "$(getconf CLK_TCK)" <<'PY'
import json, sys
backend, test, load, perf, cpu, tick = sys.argv[1:]
(user0, sys0), (user1, sys1) = (map(int, line.split()) for line in open(cpu))
result = json.load(open(load))
units = result.get("exchanges") or result["ops"]
unit = "exchange" if test == "churn" else "message"
calls, ring, cpu_ms = {}, 0.0, 0.0
for line in open(perf):
    fields = line.strip().split(",")
    if len(fields) < 3 or not fields[0].replace(".", "").isdigit():
        continue
    value, event = float(fields[0]), fields[2]
    if event == "task-clock":
        cpu_ms = value
    elif event == "io_uring:io_uring_submit_req":
        ring = value
    elif value:
        calls[event.removeprefix("syscalls:sys_enter_")] = value
total = sum(calls.values())
mix = ", ".join(f"{name} {n / units:.2f}" for name, n in sorted(calls.items(), key=lambda c: -c[1])
                if n / units >= 0.01)
per_unit_us = 1e6 / int(tick) / units
print(f"{backend} {test}: {units} {unit}s; per {unit}: {total / units:.2f} system calls "
      f"({mix}); {ring / units:.2f} io_uring requests; {cpu_ms * 1000 / units:.1f} us CPU "
      f"(during the load: user {(user1 - user0) * per_unit_us:.1f}, "
      f"system {(sys1 - sys0) * per_unit_us:.1f})")
PY
