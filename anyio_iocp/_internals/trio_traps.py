"""Trio's run context, its "wait until rescheduled" trap and its reschedule,
reached only where they are what this package was written against.

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

The package's wakers (a completion, a multishot receive's bytes, the
schedule point's own reschedule) send a parked task one reused outcome.
Trio's public ``reschedule`` reaches the runner's ``reschedule`` through a
wrapper, and that asks the runner's instruments, a ``UserDict``, whether one
watches ``task_scheduled`` through a ``__contains__`` written in Python:
three Python calls per wake.  :func:`task_waker` makes one function that
does what ``Runner.reschedule`` does, checked against the same release: it
asserts that the task belongs to the runner and is parked, gives it the
outcome and the coroutine's ``send`` for its next step, clears its abort
function and its sleep data, tells a guest run's host to tick if the run
queue was empty, queues it, and calls the ``task_scheduled`` instruments if
any is installed (asked of the registry, which is a dict once the engine
starts: :mod:`.trio_instruments`); outside a run it
raises the ``RuntimeError`` Trio's wrapper raises.  It answers None where the
attributes it sets are not the ones it was written for, where
``Runner.reschedule`` uses other names than Trio 0.35's (so does something
else), and with ``$ANYIO_IOCP_TRAPS=public``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs
from trio import lowlevel  # (faster than trio.lowlevel: see _streams/__init__.py)

from anyio_iocp._internals.versions import TESTED_TRIO, written_for

#: the environment variable that keeps Trio's public functions (``public``)
TRAPS_ENV = "ANYIO_IOCP_TRAPS"


def internals_tested() -> bool:
    """Whether Trio is the release these reaches were written for, and
    ``$ANYIO_IOCP_TRAPS`` does not ask for Trio's public functions."""
    return os.environ.get(TRAPS_ENV) != "public" and written_for("trio", TESTED_TRIO)


def trap_maker() -> tuple[Any, Callable[[Callable[[Any], Any]], Any]] | None:
    """``(run context, make_trap)``: Trio's run context, and a function that
    makes a ``WaitTaskRescheduled`` trap holding the abort function it is
    given; None where either is not the one this was written for, or where
    ``$ANYIO_IOCP_TRAPS`` is ``public``."""
    if not internals_tested():
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


#: what :func:`task_waker`'s function sets on a task, and reads of the runner
_TASK_FIELDS = (
    "_runner",
    "coro",
    "_next_send_fn",
    "_next_send",
    "_abort_func",
    "custom_sleep_data",
)
_RUNNER_FIELDS = ("runq", "is_guest", "instruments")
#: the names Trio 0.35's ``Runner.reschedule`` uses: a release whose
#: reschedule does something else (with the same fields) is not followed
_RESCHEDULE_NAMES = frozenset(
    {"_NO_SEND", "Value", "_runner", "_next_send_fn", "coro", "send", "_next_send"}
    | {"_abort_func", "custom_sleep_data", "runq", "is_guest", "force_guest_tick_asap"}
    | {"append", "instruments", "call"}
)


def has_fields(wanted: dict[type, tuple[str, ...]]) -> bool:
    """Whether each attrs class has (at least) the fields named for it."""
    try:
        return all(
            {field.name for field in attrs.fields(cls)}.issuperset(names)
            for cls, names in wanted.items()
        )
    except (TypeError, attrs.exceptions.NotAnAttrsClassError):
        return False


def uses_names(function: Any, names: frozenset[str]) -> bool:
    """Whether ``function`` is a Python function whose code uses exactly
    ``names`` (globals, attributes and methods): the same names as the
    release this package was written against, so most likely the same code."""
    code = getattr(function, "__code__", None)
    return code is not None and set(code.co_names) == names


def task_waker(outcome: Any) -> Callable[[Any], None] | None:
    """A function that reschedules a parked task with ``outcome``, as
    ``Runner.reschedule`` does (see the notes above); None where Trio is not
    the release or the attributes are not the ones it was written for, or
    where ``$ANYIO_IOCP_TRAPS`` is ``public``."""
    if not internals_tested():
        return None
    try:
        from trio._core._instrumentation import Instruments
        from trio._core._run import GLOBAL_RUN_CONTEXT, Runner, Task
    except ImportError:
        return None
    if not (
        has_fields({Task: _TASK_FIELDS, Runner: _RUNNER_FIELDS})
        and callable(getattr(Runner, "force_guest_tick_asap", None))
        and callable(getattr(Instruments, "call", None))
        and isinstance(getattr(Instruments(()), "data", None), dict)
        and uses_names(Runner.reschedule, _RESCHEDULE_NAMES)
    ):
        return None
    context = GLOBAL_RUN_CONTEXT

    @lowlevel.enable_ki_protection  # (all or nothing, as Trio's reschedule)
    def wake(task: Any) -> None:
        try:
            runner = context.runner
        except AttributeError:  # (as Trio's public reschedule says it)
            raise RuntimeError("must be called from async context") from None
        assert task._runner is runner
        assert task._next_send_fn is None  # parked: woken once
        task._next_send_fn = task.coro.send
        task._next_send = outcome
        task._abort_func = None
        task.custom_sleep_data = None
        runq = runner.runq
        if not runq and runner.is_guest:
            runner.force_guest_tick_asap()
        runq.append(task)
        instruments = runner.instruments
        if "task_scheduled" in instruments:  # (a dict's own lookup: trio_instruments)
            instruments.call("task_scheduled", task)

    return wake


#: the names Trio 0.35's ``checkpoint_if_cancelled`` uses: a release whose
#: function does something else (with the same fields) is not followed
_CANCEL_CHECK_NAMES = frozenset(
    {"current_task", "_cancel_status", "effectively_cancelled", "_runner", "main_task"}
    | {"ki_pending", "_core", "checkpoint", "AssertionError", "_cancel_points"}
)
_CANCEL_TASK_FIELDS = ("_cancel_status", "_runner", "_cancel_points")
_CANCEL_RUNNER_FIELDS = ("main_task", "ki_pending")
_CANCEL_STATUS_FIELDS = ("effectively_cancelled",)


def cancel_checker() -> Callable[[], bool] | None:
    """A function that answers, without a coroutine, whether Trio's
    ``checkpoint_if_cancelled`` would raise for the current task now: True if
    the task's scope is cancelled, if a KeyboardInterrupt waits for the main
    task, or outside a task (Trio's function raises there); otherwise it
    counts the cancel point as Trio's function does (``_cancel_points``) and
    answers False.  None where Trio is not the release or the names are not
    the ones it was written for, or where ``$ANYIO_IOCP_TRAPS`` is ``public``."""
    if not internals_tested():
        return None
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT, CancelStatus, Runner, Task
    except ImportError:
        return None
    if not (
        has_fields(
            {
                Task: _CANCEL_TASK_FIELDS,
                Runner: _CANCEL_RUNNER_FIELDS,
                CancelStatus: _CANCEL_STATUS_FIELDS,
            }
        )
        and uses_names(lowlevel.checkpoint_if_cancelled, _CANCEL_CHECK_NAMES)
    ):
        return None
    context = GLOBAL_RUN_CONTEXT

    def cancel_pending() -> bool:
        try:
            task = context.task
        except AttributeError:  # not in a task: Trio's function raises
            return True
        if task._cancel_status.effectively_cancelled:
            return True
        runner = task._runner
        if runner.ki_pending and task is runner.main_task:
            return True
        task._cancel_points += 1
        return False

    return cancel_pending
