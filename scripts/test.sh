#!/usr/bin/env bash
# The test command: lint, types, and the test suite on every Linux engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BIN="${ANYIO_IOCP_VENV:-.venv}/bin"
echo "== ruff"
"$BIN/ruff" check .
"$BIN/ruff" format --check .
echo "== mypy"
"$BIN/mypy"
echo "== pytest"
exec "$BIN/pytest" --timeout 300 --timeout-method=thread "$@"
