#!/usr/bin/env bash
# Memory checks of the io_uring shim (C):
#  1. the test suite with the shim built with AddressSanitizer
#     (LD_PRELOAD of libasan; leak detection off, as Python's own allocations
#     at exit would drown it);
#  2. a short run under valgrind memcheck (invalid reads/writes/frees).
# Usage: bash scripts/sanitize.sh [extra pytest arguments]
# Needs the venv of scripts/setup.sh, gcc with libasan, and valgrind (installed
# with apt-get when missing and running as root).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY="$ROOT/${ANYIO_IOCP_VENV:-.venv}/bin/python"
PYTEST="$ROOT/${ANYIO_IOCP_VENV:-.venv}/bin/pytest"
OUT="$ROOT/build/sanitize"
[ -x "$PY" ] || bash scripts/setup.sh

if ! command -v valgrind >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
    else
        echo "sanitize: valgrind is missing" >&2
        exit 1
    fi
fi
LIBASAN="$(gcc -print-file-name=libasan.so)"
[ -f "$LIBASAN" ] || { echo "sanitize: gcc has no libasan.so" >&2; exit 1; }

echo "== building the shim with AddressSanitizer into $OUT"
rm -rf "$OUT"
mkdir -p "$OUT/pkg"
cp -r anyio_iocp "$OUT/pkg/"
rm -f "$OUT"/pkg/anyio_iocp/_engines/io_uring/_uring*.so
ANYIO_IOCP_SANITIZE=address "$PY" - "$OUT" <<'EOF' >/dev/null
import runpy, shutil, sys
out = sys.argv[1]
built = runpy.run_path("_cffi_build/build_uring.py")["ffibuilder"].compile(tmpdir=f"{out}/cffi")
shutil.copy(built, f"{out}/pkg/anyio_iocp/_engines/io_uring/")
EOF
nm -D "$OUT"/pkg/anyio_iocp/_engines/io_uring/_uring*.so | grep -q __asan_init \
    || { echo "sanitize: the shim is not instrumented" >&2; exit 1; }

asan() {
    env PYTHONPATH="$OUT/pkg" LD_PRELOAD="$LIBASAN" \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1 "$@"
}
# the ASan build is the one imported (not the checkout's or the installed one)
(cd /tmp && asan "$PY" -c 'import anyio_iocp._engines.io_uring._uring as u, sys; sys.exit(not u.__file__.startswith(sys.argv[1]))' "$OUT/pkg")

echo "== canary: ASan must catch an overflow the shim is made to commit"
canary='
from anyio_iocp._engines.io_uring._uring import ffi, lib
pp = ffi.new("iou_ring **")
assert lib.iou_open(pp, 8, 16, 0) == 0
for i in range(4):
    lib.iou_prep_nop(pp[0], i + 1)
lib.iou_submit(pp[0], 4)
lib.iou_reap(pp[0], ffi.new("iou_cqe[]", 1), 4)  # room for 1, told 4
'
if (cd /tmp && asan env PYTHONMALLOC=malloc "$PY" -c "$canary") 2>"$OUT/canary.log"; then
    echo "sanitize: ASan did not catch the canary overflow" >&2
    exit 1
fi
grep -q "heap-buffer-overflow" "$OUT/canary.log" \
    || { echo "sanitize: canary failed without an ASan report:" >&2; cat "$OUT/canary.log" >&2; exit 1; }
echo "sanitize: canary caught (heap-buffer-overflow)"

echo "== test suite, shim built with AddressSanitizer"
start=$SECONDS
asan "$PYTEST" -q -p no:cacheprovider --timeout 600 --timeout-method=thread "$@"
echo "sanitize: ASan test suite passed in $((SECONDS - start)) s"

echo "== valgrind memcheck: a short soak (1,000 connect/exchange/close cycles) on io_uring"
start=$SECONDS
# --undef-value-errors=no: valgrind cannot see the kernel fill io_uring receive
# buffers, so every received byte would look uninitialised.  Invalid reads,
# writes and frees are still errors (exit status 99).
env PYTHONMALLOC=malloc valgrind -q --tool=memcheck --error-exitcode=99 \
    --undef-value-errors=no --suppressions=/usr/lib/valgrind/python3.supp \
    "$PY" bench/soak.py --engine io_uring --cycles 1000 --concurrency 8 --sample-every 500
echo "sanitize: valgrind clean in $((SECONDS - start)) s"
