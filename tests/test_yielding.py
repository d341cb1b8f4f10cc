"""The package's schedule point that is not a cancel point
(``_interface/yielding.py``): a yield that reschedules its task with the
reusable outcome instead of Trio's new ``Value(None)``, and that keeps Trio's
semantics (the task runs again in the next pass, a cancel is not delivered
there but at the next cancel point, KeyboardInterrupt cannot land between its
two steps).  Each behaviour test runs with both yields: the package's own and
Trio's ``cancel_shielded_checkpoint`` it replaces."""

from __future__ import annotations

import os
import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import anyio
import outcome
import pytest
import trio
from trio import lowlevel

from anyio_iocp._interface import yielding
from anyio_iocp._internals import trio_traps, versions

Yield = Callable[[], Awaitable[None]]

pytestmark = pytest.mark.timeout(60)  # (a broken yield hangs rather than fails)

OWN = yielding.choose()
BOTH = pytest.mark.parametrize(
    "shielded_yield",
    [OWN, lowlevel.cancel_shielded_checkpoint],
    ids=["own", "trio"],
)


def test_the_tested_trio_gets_the_package_s_own_yield() -> None:
    assert versions.written_for("trio", versions.TESTED_TRIO)
    assert OWN is not lowlevel.cancel_shielded_checkpoint
    if os.environ.get(trio_traps.TRAPS_ENV) != "public":
        assert yielding.shielded_yield is not lowlevel.cancel_shielded_checkpoint


def test_the_switch_and_another_trio_keep_trio_s_yield(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(trio_traps.TRAPS_ENV, "public")
    assert yielding.choose() is lowlevel.cancel_shielded_checkpoint
    monkeypatch.delenv(trio_traps.TRAPS_ENV)
    assert yielding.choose() is not lowlevel.cancel_shielded_checkpoint
    monkeypatch.setattr(trio_traps, "written_for", lambda distribution, tested: False)
    assert trio_traps.trap_maker() is None
    assert yielding.choose() is lowlevel.cancel_shielded_checkpoint


def test_a_trap_without_abort_func_keeps_trio_s_yield(monkeypatch: pytest.MonkeyPatch) -> None:
    class Renamed:
        def __init__(self, abort: object) -> None:
            self.abort_fn = abort

    monkeypatch.setattr(trio._core._traps, "WaitTaskRescheduled", Renamed)
    assert yielding.choose() is lowlevel.cancel_shielded_checkpoint


def count_values(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the ``outcome.Value`` objects made (Trio's run loop makes one per
    ``reschedule`` without an outcome)."""
    made = [0]

    made_before = outcome.Value.__init__

    def counted_init(self: outcome.Value[object], value: object) -> None:
        made[0] += 1
        made_before(self, value)

    monkeypatch.setattr(outcome.Value, "__init__", counted_init)
    return made


@pytest.mark.parametrize(
    ("shielded_yield", "values_per_yield"),
    [(OWN, 0), (lowlevel.cancel_shielded_checkpoint, 1)],
    ids=["own", "trio"],
)
def test_the_own_yield_makes_no_outcome(
    monkeypatch: pytest.MonkeyPatch, shielded_yield: Yield, values_per_yield: int
) -> None:
    made = count_values(monkeypatch)

    async def main() -> int:
        before = made[0]
        for _ in range(100):
            await shielded_yield()
        return made[0] - before

    assert anyio.run(main, backend="iocp") == 100 * values_per_yield


@BOTH
def test_two_yielding_tasks_take_turns(shielded_yield: Yield) -> None:
    order: list[str] = []

    async def spin(name: str) -> None:
        for _ in range(5):
            order.append(name)
            await shielded_yield()

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(spin, "a")
            tg.start_soon(spin, "b")

    anyio.run(main, backend="iocp")
    assert sorted(order) == ["a"] * 5 + ["b"] * 5
    # each yield lets the other task run (Trio may reverse a pass's order, so
    # a name may come twice in a row, but never gets two turns ahead)
    for end in range(len(order) + 1):
        assert abs(order[:end].count("a") - order[:end].count("b")) <= 1, order


async def cancel_point(seen: list[str]) -> None:
    """A cancel point, in a scope that is cancelled by now: it must raise."""
    await lowlevel.checkpoint()
    seen.append("not cancelled")  # pragma: no cover


@BOTH
def test_a_cancel_is_not_delivered_at_the_yield_but_at_the_next_cancel_point(
    shielded_yield: Yield,
) -> None:
    seen: list[str] = []

    async def main() -> None:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await shielded_yield()
            seen.append("yielded")
            await shielded_yield()
            seen.append("yielded again")
            await cancel_point(seen)
        seen.append("cancelled")

    anyio.run(main, backend="iocp")
    assert seen == ["yielded", "yielded again", "cancelled"]


@BOTH
def test_a_cancel_from_another_task_during_the_yield_waits_for_the_next_cancel_point(
    shielded_yield: Yield,
) -> None:
    """The scope is cancelled while the yielding task is queued: the yield
    returns, and the task's next cancel point raises."""
    seen: list[str] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def cancel_it() -> None:
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_it)
            while not tg.cancel_scope.cancel_called:
                await shielded_yield()
            seen.append("resumed")
            await cancel_point(seen)
        seen.append("cancelled")

    anyio.run(main, backend="iocp")
    assert seen == ["resumed", "cancelled"]


@BOTH
def test_a_task_that_cancels_itself_after_a_yield_is_cancelled_at_its_next_wait(
    shielded_yield: Yield,
) -> None:
    """The own yield leaves its refusing abort set while the task runs on; a
    cancel delivered then must not be lost: the next wait raises it."""
    seen: list[str] = []

    async def main() -> None:
        with anyio.CancelScope() as scope:
            await shielded_yield()
            scope.cancel()
            seen.append("cancel called")
            await anyio.sleep(10)
            seen.append("slept")  # pragma: no cover
        seen.append("cancelled")

    anyio.run(main, backend="iocp")
    assert seen == ["cancel called", "cancelled"]


@BOTH
def test_a_wait_after_a_yield_is_cancelled_by_another_task(shielded_yield: Yield) -> None:
    seen: list[str] = []

    async def main() -> None:
        event = anyio.Event()
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                await shielded_yield()
                with anyio.CancelScope() as scope:
                    scopes.append(scope)
                    await event.wait()
                seen.append(f"left the wait, cancelled={scope.cancel_called}")

            scopes: list[anyio.CancelScope] = []
            tg.start_soon(waiter)
            while not scopes:
                await anyio.sleep(0)
            await anyio.sleep(0.01)
            scopes[0].cancel()

    anyio.run(main, backend="iocp")
    assert seen == ["left the wait, cancelled=True"]


def test_the_own_yield_is_protected_from_keyboard_interrupt() -> None:
    """A KeyboardInterrupt between its reschedule and its yield would leave
    the task queued with a stale outcome: Trio defers the signal in code it
    marked as KI-protected (a map from code objects, which its signal handler
    reads for every frame of the stack)."""
    from trio._core._ki import _CODE_KI_PROTECTION_STATUS_WMAP as marked

    generator: Any = OWN()
    try:
        assert marked[generator.gi_frame.f_code] is True
    finally:
        generator.close()

    @types.coroutine
    def unprotected() -> Generator[None, None, None]:
        yield  # pragma: no cover

    plain: Any = unprotected()
    with pytest.raises(KeyError):
        marked[plain.gi_frame.f_code]
    plain.close()
