"""Every test that takes ``anyio_backend`` runs once per engine variant of the
``"iocp"`` backend:

* Linux: ``io_uring``, where streams receive with one multishot receive each
  into the engine's buffer pool (where the kernel supports it, as here);
  ``io_uring+single``, the same engine with ``$ANYIO_IOCP_RECV=single``, where
  every wait posts single receives with buffers of their own (what kernels
  without a capped multishot receive get); and ``readiness``;
* Windows: ``iocp`` and ``readiness``.

``ANYIO_IOCP_TEST_ENGINES`` narrows the list (e.g. to ``readiness`` on a machine
without io_uring).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

#: variant -> (engine, $ANYIO_IOCP_RECV or None)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "io_uring": ("io_uring", None),
    "io_uring+single": ("io_uring", "single"),
    "iocp": ("iocp", None),
    "readiness": ("readiness", None),
}

DEFAULT_ENGINES = (
    "iocp,readiness" if sys.platform == "win32" else "io_uring,io_uring+single,readiness"
)
ENGINES = tuple(
    name for name in os.environ.get("ANYIO_IOCP_TEST_ENGINES", DEFAULT_ENGINES).split(",") if name
)


@pytest.fixture(params=ENGINES)
def anyio_backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, Any]]:
    engine, recv_mode = VARIANTS[request.param]
    if recv_mode is not None:
        monkeypatch.setenv("ANYIO_IOCP_RECV", recv_mode)
    else:
        monkeypatch.delenv("ANYIO_IOCP_RECV", raising=False)
    return "iocp", {"engine": engine}


@pytest.fixture
def engine_name(anyio_backend: tuple[str, dict[str, Any]]) -> str:
    return str(anyio_backend[1]["engine"])
