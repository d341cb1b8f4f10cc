"""How the package wakes a parked task (``_internals/trio_traps.py``,
:func:`task_waker`, and ``parking.wake_task``): what Trio's
``Runner.reschedule`` does, in one call.  The behaviour tests run with both
wakers: the package's and Trio's public ``reschedule`` (the fallback where
Trio's internals are not the ones it was written for)."""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing
from trio import lowlevel

from anyio_iocp._interface import parking
from anyio_iocp._interface.parking import WOKEN, Spot
from anyio_iocp._internals import trio_instruments, trio_traps

Wake = Callable[[Any], None]

pytestmark = pytest.mark.timeout(60)  # (a task that is never woken hangs)


@pytest.fixture(params=["own", "public"])
def wake(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Wake]:
    """The package's waker, or Trio's public reschedule; ``parking`` uses it."""
    waker: Wake = parking.wake_task if request.param == "own" else parking._public_wake
    monkeypatch.setattr(parking, "wake_task", waker)
    yield waker


async def park_in(spot: Spot) -> None:
    await spot.wait()  # (Spot.wait is not a coroutine: a task cannot start on it)


def test_the_tested_trio_gets_the_package_s_waker() -> None:
    own = trio_traps.task_waker(WOKEN)
    assert own is not None
    assert parking.wake_task is not parking._public_wake
    assert parking.wake_task.__code__ is own.__code__


def test_the_switch_keeps_trio_s_reschedule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(trio_traps.TRAPS_ENV, "public")
    assert trio_traps.task_waker(WOKEN) is None


@pytest.mark.parametrize("missing", ["task", "runner"])
def test_fields_it_does_not_know_keep_trio_s_reschedule(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    name = "_TASK_FIELDS" if missing == "task" else "_RUNNER_FIELDS"
    monkeypatch.setattr(trio_traps, name, (*getattr(trio_traps, name), "_gone_in_this_release"))
    assert trio_traps.task_waker(WOKEN) is None


def test_another_reschedule_keeps_trio_s(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Trio whose ``Runner.reschedule`` uses other names (does something
    else) with the same fields keeps Trio's public reschedule."""
    from trio._core._run import Runner

    def reschedule(self: Any, task: Any, next_send: Any = None) -> None:
        self.runq.append(task)
        self.something_new = task

    monkeypatch.setattr(Runner, "reschedule", reschedule)
    assert trio_traps.task_waker(WOKEN) is None


def test_a_wake_outside_a_run_is_trio_s_error(wake: Wake) -> None:
    async def park_and_leave() -> Any:
        return lowlevel.current_task()

    task = trio.run(park_and_leave)
    with pytest.raises(RuntimeError, match="must be called from async context"):
        wake(task)


def test_a_woken_task_gets_the_outcome_and_runs(wake: Wake) -> None:
    async def main() -> list[object]:
        spot = Spot()
        seen: list[object] = []

        async def sleeper() -> None:
            await spot.wait()
            seen.append("ran")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            await trio.testing.wait_all_tasks_blocked()
            task = spot.task
            assert task is not None
            task.custom_sleep_data = "left by a sleep"
            spot.wake()
            seen.append(task._next_send)  # what it will be sent
            seen.append(task._abort_func)  # its abort is cleared
            seen.append(task.custom_sleep_data)  # and its sleep data
        return seen

    assert trio.run(main) == [WOKEN, None, None, "ran"]


def test_a_second_wake_is_refused(wake: Wake) -> None:
    """Trio asserts that a parked task is woken once; so does the package's
    waker, before it changes anything: the task runs once."""

    async def main() -> list[str]:
        ran: list[str] = []

        async def sleeper() -> None:
            await lowlevel.wait_task_rescheduled(lambda _: lowlevel.Abort.SUCCEEDED)
            ran.append("once")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sleeper)
            await trio.testing.wait_all_tasks_blocked()
            (task,) = nursery.child_tasks
            wake(task)
            with pytest.raises(AssertionError):
                wake(task)
        return ran

    assert trio.run(main) == ["once"]


@pytest.mark.parametrize("registry", ["trio", "dict"])
def test_an_instrument_sees_the_task_scheduled(wake: Wake, registry: str) -> None:
    """With Trio's registry, and with the dict the run's engine puts in its
    place (``_internals/trio_instruments.py``)."""

    class Scheduled(trio.abc.Instrument):
        def __init__(self) -> None:
            self.tasks: list[lowlevel.Task] = []

        def task_scheduled(self, task: lowlevel.Task) -> None:
            self.tasks.append(task)

    instrument = Scheduled()

    async def main() -> None:
        if registry == "dict":
            install = trio_instruments.dict_instruments()
            assert install is not None and install()
        spot = Spot()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(park_in, spot)
            await trio.testing.wait_all_tasks_blocked()
            task = spot.task
            lowlevel.add_instrument(instrument)
            try:
                spot.wake()
            finally:
                lowlevel.remove_instrument(instrument)
        assert instrument.tasks == [task]

    trio.run(main)


def test_a_guest_run_s_host_is_asked_for_a_tick(
    wake: Wake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a guest run, a wake that finds the run queue empty asks the host
    loop for a tick, as Trio's reschedule does; one that finds it not empty
    does not."""
    from trio._core._run import Runner

    asked: list[bool] = []
    real = Runner.force_guest_tick_asap

    def recording(runner: Runner) -> None:
        asked.append(True)
        real(runner)

    monkeypatch.setattr(Runner, "force_guest_tick_asap", recording)
    host: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()
    result: list[Any] = []

    async def main() -> None:
        first, second = Spot(), Spot()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(park_in, first)
            nursery.start_soon(park_in, second)
            await trio.testing.wait_all_tasks_blocked()
            asked.clear()
            runner = trio._core._run.GLOBAL_RUN_CONTEXT.runner
            assert not runner.runq  # only this task runs now
            first.wake()
            assert asked == [True]
            second.wake()  # the run queue holds the first: no second request
            assert asked == [True]

    lowlevel.start_guest_run(
        main,
        run_sync_soon_threadsafe=host.put,
        done_callback=result.append,
    )
    while not result:  # the host loop
        host.get()()
    result[0].unwrap()


def test_the_waker_is_protected_from_keyboard_interrupt() -> None:
    """A KeyboardInterrupt in the middle of a wake would leave a task half
    rescheduled: Trio defers the signal in code marked as protected, and marks
    its own reschedule."""
    from trio._core._ki import _CODE_KI_PROTECTION_STATUS_WMAP as marked

    assert marked[parking.wake_task.__code__] is True
