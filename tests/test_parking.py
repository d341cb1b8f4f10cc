"""How a :class:`Spot` waits (``_interface/parking.py``, "What a wait
yields"): one trap per spot, made at its first wait and yielded by every
wait after it, with an abort that reaches the spot through a weak reference.
The behaviour tests run with both ways of parking: the package's and Trio's
public ``wait_task_rescheduled`` (the fallback where Trio's internals are not
the ones it was written for)."""

from __future__ import annotations

import gc
import inspect
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing

from anyio_iocp._interface import parking
from anyio_iocp._interface.parking import Spot
from anyio_iocp._internals import trio_traps

OWN = (parking._make_trap, parking._park)

pytestmark = pytest.mark.timeout(60)  # (a broken park hangs rather than fails)


@pytest.fixture(params=["own", "public"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Park the package's way, or Trio's public way (as without its internals)."""
    if request.param == "public":
        monkeypatch.setattr(parking, "trap_maker", lambda: None)
        make_trap, park = parking._build_park()
        assert park is not OWN[1]
        monkeypatch.setattr(parking, "_make_trap", make_trap)
        monkeypatch.setattr(parking, "_park", park)
    yield request.param


async def wait_once(spot: Spot) -> None:
    """Park in ``spot`` until another task wakes it."""

    async def waker() -> None:
        await trio.testing.wait_all_tasks_blocked()
        spot.wake()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waker)
        await spot.wait()


def test_the_tested_trio_parks_the_package_s_way() -> None:
    from trio._core._traps import WaitTaskRescheduled

    assert trio_traps.trap_maker() is not None

    async def main() -> object:
        spot = Spot()
        await wait_once(spot)
        return spot.trap

    assert type(trio.run(main)) is WaitTaskRescheduled


def test_the_switch_keeps_trio_s_public_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(trio_traps.TRAPS_ENV, "public")
    assert trio_traps.trap_maker() is None
    _make_trap, park = parking._build_park()
    assert park is not OWN[1]
    assert inspect.iscoroutinefunction(park)


def test_a_spot_makes_its_trap_once(way: str) -> None:
    async def main() -> list[Any]:
        spot = Spot()
        traps = [spot.trap]

        async def waker() -> None:
            for _ in range(3):
                await trio.testing.wait_all_tasks_blocked()
                spot.wake()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waker)
            for _ in range(3):
                await spot.wait()
                traps.append(spot.trap)
        return traps

    traps = trio.run(main)
    assert traps[0] is None
    assert traps[1] is not None
    assert traps[1] is traps[2] is traps[3]


def test_a_cancelled_wait_is_forgotten_and_the_spot_parks_again(way: str) -> None:
    async def main() -> list[str]:
        spot = Spot()
        me = trio.lowlevel.current_task()
        seen: list[str] = []
        with trio.move_on_after(0.01):
            await spot.wait()
        seen.append(f"cancelled, task={spot.task}")
        spot.wake()  # nobody parked: nothing happens

        async def waker() -> None:
            await trio.testing.wait_all_tasks_blocked()
            seen.append(f"parked={spot.task is me}")
            spot.wake()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waker)
            await spot.wait()  # the same trap, after its abort
            seen.append("woken")
        return seen

    assert trio.run(main) == ["cancelled, task=None", "parked=True", "woken"]


async def park_in(spot: Spot) -> None:
    await spot.wait()  # (a task must await it: it is not a coroutine)


def test_a_cancel_of_one_spot_leaves_another_spot_s_task(way: str) -> None:
    """Each spot's abort forgets only its own task."""

    async def main() -> tuple[object, object]:
        first, second = Spot(), Spot()
        scope = trio.CancelScope()

        async def in_first() -> None:
            with scope:
                await first.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_first)
            nursery.start_soon(park_in, second)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            left = (first.task, second.task)
            second.wake()
        return left

    first_task, second_task = trio.run(main)
    assert first_task is None
    assert second_task is not None


def test_a_spot_that_waited_is_freed_by_its_reference_count(way: str) -> None:
    """Spot, trap and abort make no reference cycle: a stream's receiver is
    freed when the stream is dropped, not by the cycle collector."""

    async def main() -> weakref.ref[Spot]:
        spot = Spot()
        await wait_once(spot)
        assert spot.trap is not None or way == "public"
        return weakref.ref(spot)

    gc.disable()
    try:
        gone = trio.run(main)
        assert gone() is None
    finally:
        gc.enable()


def test_the_park_is_protected_from_keyboard_interrupt() -> None:
    """A KeyboardInterrupt after the spot names the task and before the task
    yields would leave a spot naming a task that did not park: Trio defers the
    signal in code marked as protected."""
    from trio._core._ki import _CODE_KI_PROTECTION_STATUS_WMAP as marked

    spot = Spot()
    generator: Any = parking._park(spot, None)
    try:
        assert marked[generator.gi_frame.f_code] is True
    finally:
        generator.close()
