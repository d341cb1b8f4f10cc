"""Every test that takes ``anyio_backend`` runs once per engine of the
``"iocp"`` backend: io_uring and readiness on Linux, iocp and readiness on
Windows (``ANYIO_IOCP_TEST_ENGINES`` narrows the list, e.g. to ``readiness`` on
a machine without io_uring)."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

DEFAULT_ENGINES = "iocp,readiness" if sys.platform == "win32" else "io_uring,readiness"
ENGINES = tuple(
    name for name in os.environ.get("ANYIO_IOCP_TEST_ENGINES", DEFAULT_ENGINES).split(",") if name
)


@pytest.fixture(params=ENGINES)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return "iocp", {"engine": request.param}


@pytest.fixture
def engine_name(anyio_backend: tuple[str, dict[str, Any]]) -> str:
    return str(anyio_backend[1]["engine"])
