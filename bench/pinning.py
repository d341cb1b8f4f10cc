"""CPU placement of the server and the load generator.

On small VMs a wake-up across CPUs costs tens of microseconds, so where the
two processes run changes the results more than the server code does.
Modes:
  same  - server and loadgen share the last CPU (default: stable numbers;
          rates then include the loadgen's own CPU cost, which is the same
          for every backend)
  split - server on the last CPU, loadgen on the first (cross-CPU wake-ups)
  none  - leave it to the scheduler (noisiest)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

PIN_MODES = ("same", "split", "none")
CpuSet = frozenset[int]


@dataclass(frozen=True)
class Placement:
    server: CpuSet | None
    loadgen: CpuSet | None


def placement(mode: str) -> Placement:
    cpus = sorted(os.sched_getaffinity(0))
    first, last = frozenset(cpus[:1]), frozenset(cpus[-1:])
    if mode == "same":
        return Placement(server=last, loadgen=last)
    if mode == "split":
        return Placement(server=last, loadgen=first)
    if mode == "none":
        return Placement(server=None, loadgen=None)
    raise ValueError(f"unknown pin mode {mode!r}")


def pin_to(cpus: CpuSet | None) -> Callable[[], None] | None:
    """A Popen preexec_fn that pins the child to `cpus` (None: no pinning)."""
    if cpus is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin
