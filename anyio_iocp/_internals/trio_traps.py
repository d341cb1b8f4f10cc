"""Trio's run context and its "wait until rescheduled" trap, reached only
where they are what this package was written against.

Two places park and yield without the objects Trio's public functions make
on every call (their notes say how and why): the schedule point of
:mod:`anyio_iocp._interface.yielding` and :class:`Parked.wait
<anyio_iocp._interface.parking.Spot>`.  Both need two private names of
Trio's: the run context ``trio._core._run.GLOBAL_RUN_CONTEXT`` (its
``runner`` and its current ``task``) and the trap class
``trio._core._traps.WaitTaskRescheduled``, of which they make instances
once and yield them many times.  :func:`trap_maker` hands both over after
the checks: Trio is the minor release this was written for
(:data:`~.versions.TESTED_TRIO`), both names exist, the runner has
``reschedule``, and a trap keeps its abort function as ``abort_func`` (the
attribute Trio's run loop reads).  Anything else answers None, and the
callers keep Trio's public ``cancel_shielded_checkpoint`` and
``wait_task_rescheduled``; so does ``$ANYIO_IOCP_TRAPS=public`` (a switch to
compare the two, read when the package is imported, as
``$ANYIO_IOCP_PASS_HOOKS`` is).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from anyio_iocp._internals.versions import TESTED_TRIO, written_for

#: the environment variable that keeps Trio's public functions (``public``)
TRAPS_ENV = "ANYIO_IOCP_TRAPS"


def trap_maker() -> tuple[Any, Callable[[Callable[[Any], Any]], Any]] | None:
    """``(run context, make_trap)``: Trio's run context, and a function that
    makes a ``WaitTaskRescheduled`` trap holding the abort function it is
    given; None where either is not the one this was written for, or where
    ``$ANYIO_IOCP_TRAPS`` is ``public``."""
    if os.environ.get(TRAPS_ENV) == "public" or not written_for("trio", TESTED_TRIO):
        return None
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT, Runner
        from trio._core._traps import WaitTaskRescheduled
    except ImportError:
        return None
    if not callable(getattr(Runner, "reschedule", None)):
        return None

    def probe(_: Any) -> Any: ...  # (an abort function is never called here)

    try:
        trap = WaitTaskRescheduled(probe)
    except TypeError:
        return None
    if getattr(trap, "abort_func", None) is not probe:
        return None
    return GLOBAL_RUN_CONTEXT, WaitTaskRescheduled
