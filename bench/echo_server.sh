# Sourced by bench/cpu_split.sh and bench/syscalls.sh (not run on its own).
# start_echo_server BACKEND: starts bench/server_app.py in echo mode with "$py",
# pins it to CPU 1, sets $srv (its pid) and $port, and on exit kills it and
# removes the files listed in $cleanup_files.
cleanup_files=()

start_echo_server() {
    local portfile
    portfile=$(mktemp)
    cleanup_files+=("$portfile")
    "$py" bench/server_app.py "$1" echo >"$portfile" 2>/dev/null &
    srv=$!
    trap 'kill $srv 2>/dev/null; rm -f "${cleanup_files[@]}"' EXIT
    for _ in $(seq 50); do [ -s "$portfile" ] && break; sleep 0.1; done
    taskset -apc 1 "$srv" >/dev/null
    port=$(head -1 "$portfile")
}
