"""A run on Linux that falls back to the readiness engine because the io_uring
shim is not built says so, once per process, with the cause and the fix.

Each case runs in a fresh interpreter: the warning is once per process, and
the shim's absence is simulated there (``sys.modules["anyio_iocp._engines.io_uring._uring"] =
None`` makes its import fail, as in a checkout where it was never built)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import anyio_iocp
from anyio_iocp._face.engines import probe_io_uring

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

PACKAGE_ROOT = str(Path(anyio_iocp.__file__).resolve().parent.parent)

CODE = textwrap.dedent(
    """
    import json, sys, warnings
    if {shim_missing}:
        sys.modules["anyio_iocp._engines.io_uring._uring"] = None
    import anyio, anyio_iocp

    async def main():
        return anyio_iocp.engine_info().name

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # once per process is the backend's doing
        names = [
            anyio.run(main, backend="iocp", backend_options={options})
            for _ in range(2)
        ]
    print(json.dumps({{
        "names": names,
        "warnings": [
            [w.category.__name__, issubclass(w.category, RuntimeWarning), str(w.message),
             w.filename]
            for w in caught
        ],
    }}))
    """
)


def run_case(
    shim_missing: bool, options: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> dict[str, Any]:
    full_env = dict(os.environ)
    full_env.pop("ANYIO_IOCP_ENGINE", None)
    full_env.update(env or {})
    full_env["PYTHONPATH"] = PACKAGE_ROOT  # the package this test process imports
    result = subprocess.run(
        [sys.executable, "-P", "-c", CODE.format(shim_missing=shim_missing, options=options or {})],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def test_missing_shim_warns_once_with_cause_and_fix() -> None:
    data = run_case(shim_missing=True)
    assert data["names"] == ["readiness", "readiness"]
    assert len(data["warnings"]) == 1, data["warnings"]
    category, is_runtime_warning, message, filename = data["warnings"][0]
    assert category == "EngineFallbackWarning"
    assert is_runtime_warning
    # the cause
    assert "the io_uring shim (anyio_iocp._engines.io_uring._uring) is not built" in message
    # the fix, and how to silence it
    assert "python setup.py build_ext --inplace" in message
    assert "C compiler" in message and "linux-libc-dev" in message
    assert "ANYIO_IOCP_ENGINE=readiness" in message
    assert "'engine': 'readiness'" in message
    # it points at the program's anyio.run call, not into the backend
    assert filename == "<string>"


def test_exported_and_a_runtime_warning() -> None:
    assert issubclass(anyio_iocp.EngineFallbackWarning, RuntimeWarning)


def test_forced_readiness_does_not_warn() -> None:
    by_option = run_case(shim_missing=True, options={"engine": "readiness"})
    assert by_option == {"names": ["readiness", "readiness"], "warnings": []}
    by_env = run_case(shim_missing=True, env={"ANYIO_IOCP_ENGINE": "readiness"})
    assert by_env == {"names": ["readiness", "readiness"], "warnings": []}


def test_no_warning_when_the_shim_is_present() -> None:
    pytest.importorskip(
        "anyio_iocp._engines.io_uring._uring", reason="the io_uring shim is not built"
    )
    usable, reason, _details = probe_io_uring()
    if not usable:
        pytest.skip(f"io_uring is not usable here: {reason}")
    assert run_case(shim_missing=False) == {"names": ["io_uring", "io_uring"], "warnings": []}


def test_io_uring_refused_by_the_kernel_does_not_warn() -> None:
    """A fallback that the installation cannot fix (here a seccomp filter that
    refuses io_uring_setup, as a container's policy does) is in the reason only."""
    pytest.importorskip(
        "anyio_iocp._engines.io_uring._uring", reason="the io_uring shim is not built"
    )
    helper = Path(__file__).with_name("seccomp_deny.py")
    code = CODE.format(shim_missing=False, options={})
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT}
    env.pop("ANYIO_IOCP_ENGINE", None)
    result = subprocess.run(
        [sys.executable, "-P", str(helper), "EPERM", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == {"names": ["readiness", "readiness"], "warnings": []}
