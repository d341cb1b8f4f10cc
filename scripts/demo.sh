#!/usr/bin/env bash
# The main job: the demo application on backend "iocp", beside asyncio and trio.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec "${ANYIO_IOCP_VENV:-.venv}/bin/python" demo.py "$@"
