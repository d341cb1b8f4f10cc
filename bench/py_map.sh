#!/usr/bin/env bash
# Where the server's CPU goes, by Python function, at full speed: perf samples
# the server under load, and each sample is put to the innermost Python
# function on its stack (its own code and the C it calls, kernel included).
# usage: bench/py_map.sh BACKEND TEST [SECONDS]
#   TEST: echo1, echo64, churn or http, as bench/callgrind.sh.  Server on CPU 1,
#   load generator on CPU 0 (LOAD_CPU=1: on the server's CPU, as bench/run.py's
#   --pin same).  TOP=N rows (30).  FREQ=Hz of the samples (997).
# Needs a Python of 3.12 or later with the package installed ($PYTHON; by
# default .venv-3.12, which bash scripts/test_pythons.sh makes): perf finds
# Python functions through that Python's perf trampoline (PYTHONPERFSUPPORT=1,
# which writes /tmp/perf-PID.map), and unwinds through the interpreter with
# DWARF (--call-graph dwarf), which stops at the first trampoline, the
# innermost Python function, all this map needs.  Needs bench/.build/loadgen
# (built by bench/run.py), Debian's linux-perf, and root or
# perf_event_paranoid <= 1.  Shares are of the samples; the samples' cost
# (copying 8 KiB of stack each) slows the server somewhat, evenly.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=$1 test=$2 seconds=${3:-5}
py=${PYTHON:-.venv-3.12/bin/python}
if ! "$py" -c 'import sys; sys.exit(not hasattr(sys, "activate_stack_trampoline"))' 2>/dev/null; then
    echo "$py has no perf trampoline: a CPython of 3.12 or later on Linux is needed (PYTHON=...)" >&2
    exit 2
fi
case $backend in
    floor | floor-uring) echo "$backend runs no Python: nothing to map" >&2; exit 2 ;;
esac
. bench/echo_server.sh
test_load "$test"
if [ "${load[0]}" = wrk ] && ! command -v wrk >/dev/null; then
    echo "the http test needs wrk (Debian: apt-get install wrk)" >&2
    exit 2
fi
export PYTHONPERFSUPPORT=1  # (the server's only: py_map.py below runs without it)
start_server "$backend" "$mode"
unset PYTHONPERFSUPPORT
data=$(mktemp) script=$(mktemp) result=$(mktemp)
cleanup_files+=("$data" "$script" "$result" "/tmp/perf-$srv.map")
run_load "${LOAD_CPU:-0}" "$((seconds + 2))" >"$result" &
load_pid=$!
sleep 1  # (the load's first second, its connections opening, left out)
perf record -q -e cpu-clock -F "${FREQ:-997}" --call-graph dwarf,8192 -p "$srv" -o "$data" \
    -- sleep "$seconds"
wait $load_pid
if [ ! -s "$result" ]; then
    echo "the load generator reported nothing" >&2
    exit 1
fi
# (--no-inline: the map needs no inlined frames, and resolving them took 2.0 s
# against 0.3 s for 5 s of samples here)
perf script --no-inline -i "$data" >"$script"
echo "$backend $test, load on CPU ${LOAD_CPU:-0}: $(head -c 200 "$result")"
"$py" bench/py_map.py --top "${TOP:-30}" "$script"
