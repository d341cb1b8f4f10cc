#!/usr/bin/env bash
# Shared set-up for scripts/demo.sh and scripts/test.sh: system packages (when
# missing), a virtual environment in .venv, the package installed from this
# checkout with its io_uring shim compiled, and the shim also built in place so
# that `python demo.py` from the checkout finds it.
#
# ANYIO_IOCP_PYTHON: the interpreter the virtual environment is built from
# (default python3); ANYIO_IOCP_VENV: where it goes (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${ANYIO_IOCP_PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: ANYIO_IOCP_PYTHON=$PYTHON does not run, or is older than Python 3.11" >&2
    exit 1
fi

# What the io_uring shim needs to build: a C compiler, the kernel's header and
# Python's headers.  ANYIO_IOCP_NO_URING=1 skips the shim (readiness engine only).
need_apt=()
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ "${ANYIO_IOCP_NO_URING:-}" != 1 ]; then
    command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
    [ -f /usr/include/linux/io_uring.h ] || need_apt+=(linux-libc-dev)
    "$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("include"), "Python.h")))' \
        || need_apt+=(python3-dev)
fi
# wrk, the HTTP load tool that tests/test_real_libraries.py runs: installed
# when missing and running as root; otherwise that test is skipped.
if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        need_apt+=(wrk)
    else
        echo "setup: wrk is not installed: its test will be skipped (Debian: apt-get install wrk)" >&2
    fi
fi
# nginx, the real HTTP server of tests/test_adapters.py (the test starts its own
# nginx, in the foreground, with a configuration of its own): installed the same way.
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        need_apt+=(nginx)
    else
        echo "setup: nginx is not installed: its tests will be skipped (Debian: apt-get install nginx)" >&2
    fi
fi
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing ${need_apt[*]} with apt-get"
        apt-get update -qq
        # Debian's nginx package starts a system service on installation; a
        # policy-rc.d that answers 101 ("action forbidden") stops invoke-rc.d
        # and deb-systemd-invoke from starting it.  Docker images ship one
        # already; otherwise one is put in place for the installation only.
        own_policy=
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 755 /usr/sbin/policy-rc.d
            own_policy=1
        fi
        status=0
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null || status=$?
        [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
        [ "$status" = 0 ] || exit "$status"
        if [[ " ${need_apt[*]} " == *" nginx "* ]]; then
            # The package also enables its service for the next boot (rc.d
            # links and a systemd unit): disable it.  If an existing
            # policy-rc.d let it start now, stop it.
            update-rc.d nginx disable >/dev/null 2>&1 || true
            systemctl disable nginx.service >/dev/null 2>&1 || true
            if [ -s /run/nginx.pid ]; then /usr/sbin/nginx -s quit || true; fi
        fi
    else
        echo "setup: missing ${need_apt[*]}: install them, or set ANYIO_IOCP_NO_URING=1 to build without the io_uring shim (readiness engine only)" >&2
        exit 1
    fi
fi

# pip here may print a warning about an unreachable local index on every call;
# drop that line only, keeping pip's exit status.
pip_quiet() {
    "$PY" -m pip -q --disable-pip-version-check "$@" 2> >(grep -v '^WARNING: Location' >&2)
}

VENV="${ANYIO_IOCP_VENV:-.venv}"
version_of() { "$1" -c 'import sys; print(sys.implementation.name, *sys.version_info[:2])'; }
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $PYTHON ($("$PYTHON" --version 2>&1))"
    "$PYTHON" -m venv "$VENV"
elif [ -n "${ANYIO_IOCP_PYTHON:-}" ] && [ "$(version_of "$VENV/bin/python")" != "$(version_of "$PYTHON")" ]; then
    echo "setup: $VENV is $("$VENV/bin/python" --version 2>&1), $PYTHON is $("$PYTHON" --version 2>&1): creating it again"
    "$PYTHON" -m venv --clear "$VENV"
fi
PY="$VENV/bin/python"
pip_quiet install --upgrade pip "setuptools>=77" wheel "cffi>=1.17"
# the package itself, rebuilt from this checkout every time; setuptools stages
# the files in build/lib.*, and a module deleted from the checkout would stay
# there and be installed again: the staging goes first
rm -rf build/lib.* build/bdist.*
pip_quiet install --no-build-isolation --force-reinstall --no-deps .
# its dependencies and the extras: test (pytest, trustme), dev (mypy, ruff), bench (uvloop)
pip_quiet install --no-build-isolation ".[test,dev,bench]"
# `python demo.py` run from the checkout imports the checkout's anyio_iocp/:
# build the shim there too, so that it finds io_uring as the installed one does.
if [ "${ANYIO_IOCP_NO_URING:-}" != 1 ]; then
    "$PY" setup.py -q build_ext --inplace >/dev/null
fi
"$PY" -c 'import anyio_iocp; print("setup: anyio-iocp", anyio_iocp.__version__, "engine:", anyio_iocp.engine_info())'
