"""Trio's instrument registry as a dict (``_internals/trio_instruments.py``):
once the run's engine starts, the runner's registry is a dict whose
membership test is the dict's own, and instruments behave as in Trio: added,
called, removed, and disabled with Trio's log message when one raises.
Where Trio's internals are not the ones it was written for, the registry
stays Trio's."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
import trio
from helpers import TRIO_INTERNALS_REFUSED, refuse_trio_internals
from trio._core._instrumentation import Instruments
from trio._core._run import GLOBAL_RUN_CONTEXT

from anyio_iocp._face.runstate import current_engine
from anyio_iocp._internals import trio_instruments
from anyio_iocp._internals.trio_instruments import DictInstruments

pytestmark = pytest.mark.timeout(60)


def registry() -> Any:
    return GLOBAL_RUN_CONTEXT.runner.instruments


class Recorder(trio.abc.Instrument):
    """Records the hooks it is called for."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def before_task_step(self, task: Any) -> None:
        self.calls.append("before_task_step")

    def after_task_step(self, task: Any) -> None:
        self.calls.append("after_task_step")

    def task_scheduled(self, task: Any) -> None:
        self.calls.append("task_scheduled")

    def before_io_wait(self, timeout: float) -> None:
        self.calls.append("before_io_wait")


def test_the_engine_s_start_puts_the_registry_in_a_dict() -> None:
    async def main() -> tuple[type, type, list[str]]:
        before = type(registry())
        current_engine()
        after = registry()
        return before, type(after), sorted(after)

    before, after, hooks = anyio.run(main, backend="iocp")
    assert before is Instruments
    assert after is DictInstruments
    # the run's own instrument is still there (it ends the run)
    assert "_all" in hooks and "after_run" in hooks


def test_the_membership_test_is_the_dict_s_own() -> None:
    async def main() -> tuple[Any, Any]:
        current_engine()
        found = registry()
        return type(found).__contains__, found.data is found

    contains, data_is_itself = anyio.run(main, backend="iocp")
    assert contains is dict.__contains__
    assert data_is_itself


def test_an_instrument_added_after_the_swap_is_called_and_removed() -> None:
    async def main() -> tuple[list[str], list[str], bool]:
        current_engine()
        recorder = Recorder()
        trio.lowlevel.add_instrument(recorder)
        trio.lowlevel.add_instrument(recorder)  # (twice: nothing more, as in Trio)
        await trio.sleep(0)
        await trio.sleep(0.001)
        seen = list(recorder.calls)
        trio.lowlevel.remove_instrument(recorder)
        recorder.calls.clear()
        await trio.sleep(0)
        with pytest.raises(KeyError):
            trio.lowlevel.remove_instrument(recorder)  # as in Trio: not active
        return seen, recorder.calls, "before_task_step" in registry()

    seen, after_removal, still_asked = anyio.run(main, backend="iocp")
    assert seen.count("before_task_step") >= 2
    assert seen.count("after_task_step") >= 1
    assert "task_scheduled" in seen and "before_io_wait" in seen
    assert after_removal == []
    assert not still_asked


def test_an_instrument_that_raises_is_disabled_with_trio_s_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(trio.abc.Instrument):
        def __init__(self) -> None:
            self.calls = 0

        def before_task_step(self, task: Any) -> None:
            self.calls += 1
            raise RuntimeError("instrument fault")

    broken = Broken()

    async def main() -> bool:
        current_engine()
        trio.lowlevel.add_instrument(broken)
        for _ in range(3):
            await trio.sleep(0)
        return broken in registry()["_all"]

    with caplog.at_level(logging.ERROR, logger="trio.abc.Instrument"):
        still_there = anyio.run(main, backend="iocp")
    assert broken.calls == 1
    assert not still_there
    assert "Instrument has been disabled" in caplog.text


def test_an_instrument_given_to_the_run_is_kept() -> None:
    recorder = Recorder()

    async def main() -> None:
        current_engine()
        recorder.calls.clear()  # (what it saw before the swap)
        await trio.sleep(0)

    anyio.run(main, backend="iocp", backend_options={"instruments": [recorder]})
    assert "before_task_step" in recorder.calls and "after_task_step" in recorder.calls


def test_a_registry_that_is_not_trio_s_is_left_alone() -> None:
    install = trio_instruments.dict_instruments()
    assert install is not None

    class Other(Instruments):
        """Someone else's registry (a subclass of Trio's)."""

    async def main() -> tuple[bool, bool, type, bool, type]:
        current_engine()  # (swapped)
        again = install()  # already a dict
        swapped = registry()
        try:
            GLOBAL_RUN_CONTEXT.runner.instruments = Other(())
            other, other_kept = install(), type(registry())
            GLOBAL_RUN_CONTEXT.runner.instruments = Instruments(())
            trio_s, trio_s_now = install(), type(registry())
        finally:
            GLOBAL_RUN_CONTEXT.runner.instruments = swapped
        return again, other, other_kept, trio_s, trio_s_now

    again, other, other_kept, trio_s, trio_s_now = anyio.run(main, backend="iocp")
    assert again is False
    assert other is False and other_kept is Other
    assert trio_s is True and trio_s_now is DictInstruments


def test_hooks_left_without_instruments_are_not_carried_over() -> None:
    """A hook whose last instrument was removed from an entry Trio's removal
    did not drop (a swap while Trio iterated the hook) is not copied: the
    loop would call an empty list at every step."""
    install = trio_instruments.dict_instruments()
    assert install is not None

    async def main() -> list[str]:
        current_engine()
        mine = Instruments(())
        mine.data["before_task_step"] = {}  # (left empty)
        GLOBAL_RUN_CONTEXT.runner.instruments = mine
        swapped = install()
        assert swapped
        return sorted(registry())

    assert anyio.run(main, backend="iocp") == ["_all"]


@pytest.mark.parametrize("how", TRIO_INTERNALS_REFUSED)
def test_the_switch_or_another_release_keeps_trio_s_registry(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    refuse_trio_internals(monkeypatch, how)
    assert trio_instruments.dict_instruments() is None


def test_a_runner_without_the_field_keeps_trio_s_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(trio_instruments, "has_fields", lambda wanted: False)
    assert trio_instruments.dict_instruments() is None


@pytest.mark.parametrize("name", ["add_instrument", "remove_instrument", "call"])
def test_a_registry_function_that_does_something_else_keeps_trio_s(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    def other(self: Any, *args: Any) -> None:
        self.data.clear()  # (other names than Trio 0.35's)

    monkeypatch.setattr(Instruments, name, other)
    assert trio_instruments.dict_instruments() is None
