#!/usr/bin/env bash
# Server CPU per echoed message, split into user and kernel time.
# usage: bench/cpu_split.sh BACKEND CONNS [SECONDS]   (after bench/run.py has built .build/)
# The server is pinned to CPU 1 and the load generator to CPU 0, so neither
# preempts the other (LOAD_CPU=1: on the server's CPU, as bench/run.py's
# --pin same); times come from /proc/PID/stat (tick-sampled: see
# docs/performance.md on how this kernel splits user from kernel time).
set -euo pipefail
cd "$(dirname "$0")/.."
backend=$1 conns=$2 seconds=${3:-4}
py=${PYTHON:-python3}
. bench/echo_server.sh
start_echo_server "$backend"
read -r u0 s0 < <(server_ticks)
result=$(taskset -c "${LOAD_CPU:-0}" bench/.build/loadgen echo 127.0.0.1 "$port" "$conns" 64 "$seconds")
read -r u1 s1 < <(server_ticks)
"$py" - "$backend" "$conns" "$seconds" "$u0" "$s0" "$u1" "$s1" "$result" <<'PY'
import json, os, sys
backend, conns, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
u0, s0, u1, s1 = (int(x) for x in sys.argv[4:8])
ops = json.loads(sys.argv[8])["ops"]
tick = os.sysconf("SC_CLK_TCK")
user, system = (u1 - u0) / tick, (s1 - s0) / tick
load_cpu = os.environ.get("LOAD_CPU", "0")
print(f"{backend:8} conns={conns:<3} load on CPU {load_cpu}: round trips/s={ops / seconds:9,.0f}  "
      f"user {user / ops * 1e6:6.2f} us/msg  kernel {system / ops * 1e6:6.2f} us/msg")
PY
