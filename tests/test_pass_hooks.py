"""The engine's once-per-pass hooks (``_internals/pass_hooks.py``): called from Trio's epoll
I/O manager on Linux, through an instrument elsewhere or when asked, and in
both cases once per scheduler pass, with sniffio still answering "iocp"."""

from __future__ import annotations

import logging
import sys
from typing import Any

import anyio
import pytest
import trio
from helpers import SNIFFIO_PLACES, open_pair, sniffio_seen

from anyio_iocp._face.runstate import current_engine
from anyio_iocp._interface.engine import Engine
from anyio_iocp._internals.pass_hooks import HOOKS_ENV

ON_EPOLL = sys.platform == "linux"


class PassCounter(trio.abc.Instrument):
    """Counts Trio's scheduler passes (its own hook, which stays an instrument)."""

    def __init__(self) -> None:
        self.passes = 0

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


def count_engine_hooks(
    monkeypatch: pytest.MonkeyPatch, engine_class: type[Engine]
) -> dict[str, int]:
    calls = {"before": 0, "after": 0}
    before, after = engine_class.before_io_wait, engine_class.after_io_wait

    def counting_before(self: Engine, timeout: float) -> None:
        calls["before"] += 1
        before(self, timeout)

    def counting_after(self: Engine) -> None:
        calls["after"] += 1
        after(self)

    monkeypatch.setattr(engine_class, "before_io_wait", counting_before)
    monkeypatch.setattr(engine_class, "after_io_wait", counting_after)
    return calls


def engine_class(engine_name: str) -> type[Engine]:
    if engine_name == "io_uring":
        from anyio_iocp._engines.io_uring.engine import UringEngine

        return UringEngine
    if engine_name == "iocp":
        from anyio_iocp._engines.iocp.engine import IocpEngine

        return IocpEngine
    from anyio_iocp._engines.readiness.engine import ReadinessEngine

    return ReadinessEngine


async def exchange_while_counting(
    rounds: int, calls: dict[str, int] | None = None
) -> tuple[int, dict[str, Any]]:
    """Start the engine, then count passes over ``rounds`` echoed messages;
    returns (passes, what the run looked like, with the engine hook calls
    counted in ``calls`` over the same passes)."""
    listener, client, server = await open_pair()
    counter = PassCounter()
    trio.lowlevel.add_instrument(counter)
    at_start = dict(calls or {})
    try:
        for i in range(rounds):
            await client.send(b"message %d" % i)
            assert await server.receive() == b"message %d" % i
    finally:
        trio.lowlevel.remove_instrument(counter)
        hook_calls = {name: (calls or {})[name] - at_start[name] for name in at_start}
        for resource in (client, server, listener):
            await resource.aclose()
    from trio._core._run import GLOBAL_RUN_CONTEXT

    runner = GLOBAL_RUN_CONTEXT.runner
    seen = {
        "manager": type(runner.io_manager).__name__,
        "instrument hooks": sorted(
            hook for hook in ("before_io_wait", "after_io_wait") if hook in runner.instruments
        ),
        "engine": current_engine(),
        "hook calls": hook_calls,
    }
    return counter.passes, seen


@pytest.mark.parametrize("hooks", ["manager", "instrument"])
def test_engine_hooks_run_once_per_pass(
    engine_name: str, hooks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(HOOKS_ENV, hooks)
    calls = count_engine_hooks(monkeypatch, engine_class(engine_name))

    async def main() -> tuple[int, dict[str, Any]]:
        return await exchange_while_counting(50, calls)

    passes, seen = anyio.run(
        main, backend="iocp", backend_options={"engine": engine_name, "schedule": "strict"}
    )
    assert passes >= 50  # at least one pass per message
    # the counter was added and removed during passes of their own: one each
    hook_calls = seen["hook calls"]
    assert abs(hook_calls["before"] - passes) <= 1, (hook_calls, passes)
    assert abs(hook_calls["after"] - passes) <= 1, (hook_calls, passes)
    if hooks == "manager" and ON_EPOLL:
        assert seen["manager"] == "EpollIOManagerWithEngine"
        assert seen["instrument hooks"] == []  # nothing dispatched per pass
    else:
        assert seen["manager"] != "EpollIOManagerWithEngine"
        assert seen["instrument hooks"] == ["after_io_wait", "before_io_wait"]


@pytest.mark.parametrize("hooks", ["manager", "instrument"])
def test_sniffio_after_the_engine_started(
    engine_name: str, hooks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the engine exists, tasks, system tasks and calls back from worker
    threads still see "iocp", on every pass."""
    monkeypatch.setenv(HOOKS_ENV, hooks)

    async def main() -> dict[str, str]:
        await exchange_while_counting(3)  # the engine has started
        return await sniffio_seen()

    seen = anyio.run(main, backend="iocp", backend_options={"engine": engine_name})
    assert seen == dict.fromkeys(SNIFFIO_PLACES, "iocp")


def test_a_failing_hook_is_logged_and_the_run_goes_on(
    engine_name: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cls = engine_class(engine_name)
    before = cls.before_io_wait
    failures = {"left": 3}

    def failing_before(self: Engine, timeout: float) -> None:
        before(self, timeout)  # the work is done: only the exception is injected
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("injected hook failure")

    monkeypatch.setattr(cls, "before_io_wait", failing_before)

    async def main() -> int:
        passes, _seen = await exchange_while_counting(10)
        return passes

    with caplog.at_level(logging.ERROR, logger="anyio_iocp"):
        passes = anyio.run(
            main, backend="iocp", backend_options={"engine": engine_name, "schedule": "strict"}
        )
    assert passes >= 10
    assert failures["left"] == 0
    logged = [r for r in caplog.records if "engine submission failed" in r.getMessage()]
    assert len(logged) == 3
