#!/usr/bin/env bash
# System calls per echoed message on the server, from perf's syscall tracepoints.
# usage: bench/syscalls.sh BACKEND CONNS [SECONDS]   (after bench/run.py has built .build/;
# needs Debian's linux-perf and root or perf_event_paranoid <= 1 for tracepoints)
# Server and load generator share CPU 1, as in bench/run.py's default placement.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=$1 conns=$2 seconds=${3:-3}
py=${PYTHON:-python3}
. bench/echo_server.sh
perfout=$(mktemp)
cleanup_files+=("$perfout")
start_echo_server "$backend"
events=syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_sendto
events=$events,syscalls:sys_enter_recvfrom,syscalls:sys_enter_io_uring_enter
perf stat -x, -e "$events" -p "$srv" -o "$perfout" -- sleep "$("$py" -c "print($seconds + 0.2)")" &
perf_pid=$!
sleep 0.1
result=$(taskset -c 1 bench/.build/loadgen echo 127.0.0.1 "$port" "$conns" 64 "$seconds")
wait $perf_pid
"$py" - "$backend" "$conns" "$result" "$perfout" <<'PY'
import json, sys
backend, conns, result, perfout = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
ops = result["ops"]
counts = {}
for line in open(perfout):
    parts = line.strip().split(",")
    if len(parts) > 2 and parts[2].startswith("syscalls:sys_enter_"):
        counts[parts[2].removeprefix("syscalls:sys_enter_")] = int(parts[0] or 0)
print(f"{backend} conns={conns} messages={ops}: " + ", ".join(
    f"{name} {count / ops:.3f}" for name, count in counts.items()) + " per message")
PY
