"""Runs that end with everything open, Ctrl+C in the middle of I/O, and a
forked child running its own loop.  Each scenario runs in a fresh interpreter
with warnings as errors (``-X dev -W error``): see ``lifecycle_script.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("lifecycle_script.py")
#: the engines bound their end-of-run drain at 5 s (RUN_END_DRAIN_SECONDS):
#: a run whose end takes half of that has fallen back on the bound
RUN_END_FALLBACK_SECONDS = 2.5


def run_scenario(scenario: str, engine: str, env: dict[str, str] | None = None) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-X", "dev", "-W", "error", str(SCRIPT), scenario, engine],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", "warnings or errors were printed"
    lines = result.stdout.splitlines()
    fds = [line for line in lines if line.startswith("fds ")]
    # under Wine the handle count reads 0: the socket objects still count
    assert len(fds) == 2 and fds[0] == fds[1], "every descriptor and socket closed again"
    assert lines[-1] == "ring fds []"
    return lines


@pytest.mark.parametrize("wakeup", ["default", "task"])
@pytest.mark.parametrize("ending", ["return", "raise", "drop-then-return", "idle-gate"])
def test_run_ends_with_streams_open_and_operations_pending(
    engine_name: str, ending: str, wakeup: str
) -> None:
    """A listener with its accept pool posted, a stream with a receive posted,
    another with write-behind sends pending, all dropped without aclose():
    the run ends cleanly either way, with no warning.  ``drop-then-return``:
    the run goes on a little after the drop, so the closes of what was dropped
    are under way when it ends.  ``task``: io_uring's fallback wake-up, where a
    system task, not Trio's epoll set, wakes the loop for the ring (a close
    still waiting for its cancelled operations as the run ended once hung it).
    ``idle-gate``: a listener whose idle gate waits for a silent connection's
    first bytes as the run ends (with the task wake-up it hung the run).  No
    ending may fall back on the bound of the end-of-run drain."""
    if wakeup == "task" and not engine_name.startswith("io_uring"):
        pytest.skip("the ring's wake-up is io_uring's")
    env = {"ANYIO_IOCP_RING_WAKEUP": "task"} if wakeup == "task" else {}
    lines = run_scenario(ending, engine_name, env)
    assert ("raised the program failed" in lines) == (ending == "raise")
    took = float(next(line for line in lines if line.startswith("run end took ")).split()[3])
    assert took < RUN_END_FALLBACK_SECONDS, f"the run's end waited {took:.1f} s"


def test_keyboard_interrupt_in_the_middle_of_io(engine_name: str) -> None:
    lines = run_scenario("interrupt", engine_name)
    assert "KeyboardInterrupt" in lines


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no fork() (no os.fork)")
def test_forked_child_gets_its_own_ring(engine_name: str) -> None:
    """The child lets go of the parent's ring (it has no ring descriptor
    before its own run) and runs its own; the parent's posted receive still
    completes in the parent afterwards."""
    lines = run_scenario("fork", engine_name)
    assert "child inherited rings [], got b'child echo'" in lines
    assert "child exit 0" in lines
    assert "parent still receives" in lines
