#!/usr/bin/env bash
# Shared set-up for scripts/demo.sh and scripts/test.sh: system packages (when
# missing), a virtual environment in .venv, the package installed from this
# checkout with its io_uring shim compiled, and the shim also built in place so
# that `python demo.py` from the checkout finds it.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
[ -f /usr/include/linux/io_uring.h ] || need_apt+=(linux-libc-dev)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${need_apt[*]} with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "setup: missing ${need_apt[*]}; install them (or set ANYIO_IOCP_NO_URING=1 for the readiness engine only)" >&2
        exit 1
    fi
fi

VENV="${ANYIO_IOCP_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel "cffi>=1.17" 2>&1 \
    | grep -v "^WARNING: Location" || true
# extras: test (pytest, hypothesis), dev (mypy, ruff), bench (uvloop)
"$PY" -m pip install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps . 2>&1 \
    | grep -v "^WARNING: Location" || true
"$PY" -m pip install -q --disable-pip-version-check --no-build-isolation ".[test,dev,bench]" 2>&1 \
    | grep -v "^WARNING: Location" || true
"$PY" setup.py -q build_ext --inplace >/dev/null 2>&1 || echo "setup: in-place build of the shim failed (the installed package is used)"
"$PY" -c 'import anyio_iocp; print("setup: anyio-iocp", anyio_iocp.__version__, "engine:", anyio_iocp.engine_info())'
