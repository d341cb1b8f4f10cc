#!/usr/bin/env bash
# AnyIO's own test suite under Wine: Windows CPython 3.13, backends trio,
# iocp (IOCP engine) and iocp (readiness engine) side by side.
#
#   bash scripts/wine_conformance.sh                 # the whole suite (see docs/windows.md for its time)
#   bash scripts/wine_conformance.sh tests/test_sockets.py   # a part (what .ci/run runs)
#   extra arguments go to pytest (-k TCP -x), or to anyio_suite.py (--no-rerun, --timeout N)
#
# It prepares the Wine tree with scripts/wine_test.sh (--shell), then runs
# conformance/anyio_suite.py --wine on Linux: AnyIO's sdist and its test
# dependencies as win_amd64 wheels (unzipped: pip cannot run under Wine) go to
# $ANYIO_IOCP_WINE_DIR/conformance, pytest runs under Wine, and the report lists
# pass/fail/skip per backend and every test that passes on trio but fails on
# iocp.  Exit status as anyio_suite.py's: 0 when no such test is left.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HOST_PY="${CONFORMANCE_PYTHON:-$ROOT/.venv/bin/python}"
# The suite's paths are relative to AnyIO's tree: a path given first selects
# part of it (pytest's own arguments after it).
status=0
bash scripts/wine_test.sh --shell "$HOST_PY" "$ROOT/conformance/anyio_suite.py" --wine "$@" \
    || status=$?
"$(command -v wineserver || echo /usr/lib/wine/wineserver64)" -k 2>/dev/null || true
exit "$status"
