# Sourced by bench/cpu_split.sh, bench/syscalls.sh, bench/syscall_mix.sh,
# bench/callgrind.sh and bench/py_map.sh (not run on its own).
# start_server BACKEND MODE: starts bench/server_app.py in MODE with "$py"
# (or, for BACKEND floor or floor-uring, the C floor server built in .build/),
# pins it to CPU 1, sets $srv (its pid) and $port, and on exit kills it and
# removes the files listed in $cleanup_files.  start_echo_server BACKEND: the
# same in echo mode.
# server_ticks: the server's user and system CPU so far, in clock ticks
# (/proc/PID/stat), on one line.
# run_load CPU SECONDS [WRK_OPTION...]: the load test_load chose, pinned to
# CPU, on the server at $port for SECONDS; prints the load's JSON line (wrk's
# through bench/wrk_json.lua, with WRK_OPTIONs).
# test_load TEST: the server's mode ($mode) and the load generator's
# arguments ($load: its mode, then what follows host and port) of a test
# named echo1, echo64 or churn; for http (the h11 mode, loaded by wrk) $load
# is "wrk" and the connections.
cleanup_files=()

start_server() {
    local portfile
    portfile=$(mktemp)
    cleanup_files+=("$portfile")
    case $1 in
        floor | floor-uring)
            local program=bench/.build/${1/-/_}
            if [ ! -x "$program" ]; then
                echo "$program is not built (bench/run.py builds it)" >&2
                exit 2
            fi
            "$program" "$2" >"$portfile" 2>/dev/null &
            ;;
        *) "$py" bench/server_app.py "$1" "$2" >"$portfile" 2>/dev/null & ;;
    esac
    srv=$!
    trap 'kill $srv 2>/dev/null; rm -f "${cleanup_files[@]}"' EXIT
    for _ in $(seq 50); do [ -s "$portfile" ] && break; sleep 0.1; done
    taskset -apc 1 "$srv" >/dev/null
    port=$(head -1 "$portfile")
}

server_ticks() {
    awk '{print $14, $15}' "/proc/$srv/stat"
}

start_echo_server() {
    start_server "$1" echo
}

test_load() {
    case $1 in
        echo1) mode=echo load=(echo 1 64) ;;
        echo64) mode=echo load=(echo 64 64) ;;
        churn) mode=hello load=(churn 16) ;;
        http) mode=http load=(wrk 64) ;;
        *) echo "unknown test $1 (echo1, echo64, churn, http)" >&2; exit 2 ;;
    esac
}

run_load() {
    local cpu=$1 seconds=$2
    shift 2
    if [ "${load[0]}" = wrk ]; then
        taskset -c "$cpu" wrk -t1 -c"${load[1]}" -d"${seconds}s" "$@" -s bench/wrk_json.lua \
            "http://127.0.0.1:$port/" | tail -1
    else
        taskset -c "$cpu" bench/.build/loadgen "${load[0]}" 127.0.0.1 "$port" "${load[@]:1}" \
            "$seconds"
    fi
}
