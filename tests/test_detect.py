"""Engine detection: io_uring refused or incomplete -> readiness, with the reason."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from anyio_iocp._engines.io_uring import probe as uring_probe

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

SNIPPET = textwrap.dedent(
    """
    import anyio, anyio_iocp

    async def main():
        return anyio_iocp.engine_info()

    info = anyio.run(main, backend="iocp")
    print(info.name)
    print(info.reason)
    try:
        anyio.run(main, backend="iocp", backend_options={"engine": "io_uring"})
    except RuntimeError as exc:
        print("forced:", exc)
    """
)


@pytest.mark.parametrize(
    ("errno_name", "expected"),
    [
        ("EPERM", "io_uring_setup failed with EPERM: refused by a seccomp policy"),
        ("ENOSYS", "io_uring_setup failed with ENOSYS"),
    ],
)
def test_refused_io_uring_falls_back_to_readiness(errno_name: str, expected: str) -> None:
    helper = Path(__file__).with_name("seccomp_deny.py")
    result = subprocess.run(
        [sys.executable, str(helper), errno_name, SNIPPET],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    name, reason, forced = result.stdout.splitlines()
    assert name == "readiness"
    assert reason.startswith("io_uring unavailable: " + expected)
    assert forced.startswith(
        "forced: the io_uring engine was requested but cannot run: " + expected
    )


def test_missing_opcode_is_named() -> None:
    # opcode 250 does not exist in any kernel: the probe must say so by name
    required = {**uring_probe._required_opcodes(), 250: "IORING_OP_FUTURE (test)"}
    usable, reason, _details = uring_probe._probe_io_uring(required)
    assert not usable
    assert reason == "the kernel lacks io_uring opcodes: IORING_OP_FUTURE (test)"


def test_every_needed_opcode_is_present_here() -> None:
    usable, reason, details = uring_probe._probe_io_uring(uring_probe._required_opcodes())
    assert usable, reason
    assert dict(details)["nodrop"] is True


def test_cooperative_task_running_is_detected_and_used() -> None:
    """COOP_TASKRUN (Linux 5.19): where the kernel has it, the engine's ring is
    set up with it."""
    release = tuple(int(part) for part in platform.release().split(".")[:2])
    if release < (5, 19):
        pytest.skip(f"IORING_SETUP_COOP_TASKRUN is Linux 5.19's; this is {platform.release()}")
    from anyio_iocp._engines.io_uring._uring import lib

    from anyio_iocp._face.runstate import current_engine

    _usable, _reason, details = uring_probe._probe_io_uring(uring_probe._required_opcodes())
    assert dict(details)["coop_taskrun"] is True

    async def main() -> int:
        return int(current_engine().ring_flags)  # type: ignore[attr-defined]

    flags = anyio.run(main, backend="iocp", backend_options={"engine": "io_uring"})
    assert flags & lib.IORING_SETUP_COOP_TASKRUN
