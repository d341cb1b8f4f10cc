"""The cancel check without a coroutine (``_interface/cancel_points.py``):
``cancel_pending()`` answers what Trio's ``checkpoint_if_cancelled()`` would
do, and counts a cancel point as Trio's function does; where Trio's
internals are not the ones it was written for, every caller takes Trio's
public function."""

from __future__ import annotations

import math
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
from helpers import TRIO_INTERNALS_REFUSED, refuse_trio_internals
from trio import lowlevel

from anyio_iocp._interface import cancel_points
from anyio_iocp._internals import trio_traps

Check = Callable[[], bool]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def check() -> Check:
    found = trio_traps.cancel_checker()
    assert found is not None
    return found


def test_the_tested_trio_gets_the_check_without_a_coroutine() -> None:
    assert cancel_points.cancel_pending is not cancel_points._always
    found = trio_traps.cancel_checker()
    assert found is not None
    assert cancel_points.cancel_pending.__code__ is found.__code__


def test_nothing_cancelled_counts_a_cancel_point_as_trio_does(check: Check) -> None:
    async def main() -> tuple[int, int, list[bool]]:
        task: Any = lowlevel.current_task()
        before = task._cancel_points
        await lowlevel.checkpoint_if_cancelled()
        by_trio = task._cancel_points - before
        before = task._cancel_points
        answers = [check(), check(), check()]
        return by_trio, task._cancel_points - before, answers

    by_trio, by_check, answers = trio.run(main)
    assert by_trio == 1
    assert by_check == 3
    assert answers == [False, False, False]


def test_a_cancelled_scope_is_pending_and_trio_raises(check: Check) -> None:
    async def main() -> list[Any]:
        task: Any = lowlevel.current_task()
        seen: list[Any] = []
        with trio.CancelScope() as scope:
            seen.append(check())
            scope.cancel()
            before = task._cancel_points
            seen.append(check())
            seen.append(task._cancel_points - before)  # (a pending cancel is not counted)
            if seen[-2]:
                await lowlevel.checkpoint_if_cancelled()
            seen.append("not raised")
        seen.append(scope.cancelled_caught)
        # a deadline that has passed cancels too
        with trio.move_on_at(-math.inf) as late:
            seen.append(check())
        seen.append(late.cancelled_caught)
        # a shield hides the outer cancel, as from Trio's function
        with trio.CancelScope() as outer:
            outer.cancel()
            with trio.CancelScope(shield=True):
                seen.append(check())
        return seen

    assert trio.run(main) == [False, True, 0, True, True, False, False]


@pytest.fixture
def sigint_handled() -> Iterator[None]:
    """Python's own SIGINT handler for the test, which Trio replaces with its
    own during a run only when it finds it: a test runner started with SIGINT
    ignored (a background job of a non-interactive shell) would otherwise
    ignore the test's Ctrl+C."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@lowlevel.enable_ki_protection
def interrupt_deferred() -> None:
    """A Ctrl+C that Trio defers (this function is KI-protected): it waits
    for the main task's next cancel point (``ki_pending``)."""
    signal.raise_signal(signal.SIGINT)


@pytest.mark.usefixtures("sigint_handled")
def test_a_keyboard_interrupt_waiting_for_the_main_task_is_pending(check: Check) -> None:
    answers: list[bool] = []

    async def main() -> None:
        interrupt_deferred()
        answers.append(check())
        if answers[-1]:
            await lowlevel.checkpoint_if_cancelled()  # (raises it)
        answers.append(False)  # (not reached)

    with pytest.raises(KeyboardInterrupt):
        trio.run(main)
    assert answers == [True]


@pytest.mark.usefixtures("sigint_handled")
def test_a_keyboard_interrupt_is_not_pending_for_another_task(check: Check) -> None:
    answers: list[bool] = []

    async def other() -> None:
        interrupt_deferred()
        answers.append(check())

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)

    with pytest.raises(KeyboardInterrupt):
        trio.run(main)
    assert answers == [False]


def test_outside_a_task_trio_s_function_gives_the_error(check: Check) -> None:
    answers: list[bool] = []
    thread = threading.Thread(target=lambda: answers.append(check()))
    thread.start()
    thread.join()
    assert answers == [True]
    assert check() is True  # (this test's own thread runs no Trio task either)


@pytest.mark.parametrize("how", TRIO_INTERNALS_REFUSED)
def test_the_switch_or_another_release_keeps_trio_s_function(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    refuse_trio_internals(monkeypatch, how)
    assert trio_traps.cancel_checker() is None


@pytest.mark.parametrize(
    "missing", ["_CANCEL_TASK_FIELDS", "_CANCEL_RUNNER_FIELDS", "_CANCEL_STATUS_FIELDS"]
)
def test_fields_it_does_not_know_keep_trio_s_function(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    fields = (*getattr(trio_traps, missing), "_gone_in_this_release")
    monkeypatch.setattr(trio_traps, missing, fields)
    assert trio_traps.cancel_checker() is None


def test_another_checkpoint_if_cancelled_keeps_trio_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Trio whose ``checkpoint_if_cancelled`` uses other names (checks
    something more) keeps Trio's function."""

    async def checkpoint_if_cancelled() -> None:
        task: Any = lowlevel.current_task()
        if task._cancel_status.effectively_cancelled or task.something_new:
            await lowlevel.checkpoint()

    monkeypatch.setattr(lowlevel, "checkpoint_if_cancelled", checkpoint_if_cancelled)
    assert trio_traps.cancel_checker() is None


def test_without_the_check_every_caller_takes_trio_s_function() -> None:
    assert cancel_points._always() is True
