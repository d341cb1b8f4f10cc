"""Every test that takes ``anyio_backend`` runs once per engine variant of the
``"iocp"`` backend:

* Linux: ``io_uring``, where streams receive with one multishot receive each
  into the engine's buffer pool (where the kernel supports it, as here);
  ``io_uring+single``, the same engine with ``$ANYIO_IOCP_RECV=single``, where
  every wait posts single receives with buffers of their own (what kernels
  without a capped multishot receive get); ``io_uring+ring``, the same engine
  with ``$ANYIO_IOCP_SEND=ring``, where every send that can goes quiet
  through the ring (by default only when passes serve several streams); and
  ``readiness``;
* Windows: ``iocp`` and ``readiness``;
* ``+guest`` (``io_uring+guest``, ``iocp+guest``): the default engine again,
  under AnyIO's own Trio test runner.

AnyIO's Trio test runner keeps one loop across a test and its fixtures by
running Trio in *guest mode*, where the backend keeps its per-pass hooks in a
Trio instrument (``anyio_iocp._internals.pass_hooks``).  ``anyio.run`` runs Trio
normally, and there the hooks move into Trio's I/O manager.  So every variant
but ``+guest`` runs each async test in a run of its own, as ``anyio.run``
would (:class:`RunPerTest`), and ``+guest`` keeps AnyIO's runner: both routes
run the whole suite.

``ANYIO_IOCP_TEST_ENGINES`` narrows the list (e.g. to ``readiness`` on a machine
without io_uring).

Runs keep the default schedule (schedule points on a budget) unless the test
is marked ``@pytest.mark.schedule("strict")``; a test that must hold in both
modes (the random interleavings) takes the schedule as a parameter.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.abc import TestRunner
from helpers import MovedClock

import anyio_iocp
from anyio_iocp._face.backend import IocpBackend
from anyio_iocp._face.schedule import BUDGET_ENV, SCHEDULE_ENV, SPIN_ENV

#: the environment settings a variant may set (the others are cleared, with
#: the run's schedule settings: a marker or a test sets those)
VARIANT_ENV = ("ANYIO_IOCP_RECV", "ANYIO_IOCP_SEND", SCHEDULE_ENV, BUDGET_ENV, SPIN_ENV)
#: variant -> (engine, its environment settings)
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "io_uring": ("io_uring", {}),
    "io_uring+single": ("io_uring", {"ANYIO_IOCP_RECV": "single"}),
    "io_uring+ring": ("io_uring", {"ANYIO_IOCP_SEND": "ring"}),
    "io_uring+guest": ("io_uring", {}),
    "iocp": ("iocp", {}),
    "iocp+guest": ("iocp", {}),
    "readiness": ("readiness", {}),
}

DEFAULT_ENGINES = (
    "iocp,iocp+guest,readiness"
    if sys.platform == "win32"
    else "io_uring,io_uring+single,io_uring+ring,io_uring+guest,readiness"
)
#: the backend option (taken out again before the backend sees it) that
#: selects AnyIO's own test runner
GUEST_OPTION = "_anyio_test_runner_guest"
ENGINES = tuple(
    name for name in os.environ.get("ANYIO_IOCP_TEST_ENGINES", DEFAULT_ENGINES).split(",") if name
)


@pytest.fixture(params=ENGINES)
def anyio_backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict[str, Any]]:
    engine, env = VARIANTS[request.param]
    for name in VARIANT_ENV:
        if name in env:
            monkeypatch.setenv(name, env[name])
        else:
            monkeypatch.delenv(name, raising=False)
    options: dict[str, Any] = {"engine": engine}
    if request.param.endswith("+guest"):
        options[GUEST_OPTION] = True
    schedule = request.node.get_closest_marker("schedule")
    if schedule is not None:  # the run's schedule points (default: on a budget)
        options["schedule"] = schedule.args[0]
    return "iocp", options


class RunPerTest(TestRunner):
    """Each async test (and async fixture) in a Trio run of its own, started
    as ``anyio.run`` starts it (not in guest mode)."""

    def __init__(self, backend: Any, options: dict[str, Any]) -> None:
        self._backend = backend
        self._options = options
        self._running = False

    def __exit__(self, *exc_info: object) -> None:
        return None

    def is_running(self) -> bool:
        return self._running

    def _run(self, func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        # the plugin has set sniffio's context variable, so anyio.run would
        # refuse to start: call the backend as anyio.run does
        self._running = True
        try:
            return self._backend.run(functools.partial(func, **kwargs), (), {}, self._options)
        finally:
            self._running = False

    def run_fixture(self, fixture_func: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        return self._run(fixture_func, kwargs)

    def run_test(self, test_func: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        self._run(test_func, kwargs)

    def run_asyncgen_fixture(
        self, fixture_func: Callable[..., Any], kwargs: dict[str, Any]
    ) -> Iterator[Any]:
        raise RuntimeError(
            "an async generator fixture shares one run with its test: "
            "this suite has none, and RunPerTest cannot run one"
        )


def _create_test_runner(cls: Any, options: dict[str, Any]) -> TestRunner:
    options = dict(options)
    if options.pop(GUEST_OPTION, False):
        return _anyio_test_runner(options)
    return RunPerTest(cls, options)


_anyio_test_runner = IocpBackend.create_test_runner
IocpBackend.create_test_runner = classmethod(_create_test_runner)  # type: ignore[method-assign,assignment]


#: the checkout's package, beside this tests folder (absent where the tests
#: are copied without it, as under Wine)
CHECKOUT_PACKAGE = Path(__file__).resolve().parent.parent / "anyio_iocp"


#: modules generated at build time, not part of the checkout's code
#: (git-ignored; setup.py writes them into the installed copy)
GENERATED = {Path("_engines/iocp/_winsock_cffi.py")}


def stale_modules(checkout: Path, imported: Path) -> list[str]:
    """The checkout's modules that the imported copy lacks or has otherwise."""
    stale = []
    for source in sorted(checkout.rglob("*.py")):
        name = source.relative_to(checkout)
        if name in GENERATED:
            continue
        copy = imported / name
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            stale.append(str(name))
    return stale


def pytest_sessionstart(session: pytest.Session) -> None:
    """The tests import the installed package: stop at once when it is not the
    checkout's code, which would test something other than what was edited."""
    imported = Path(anyio_iocp.__file__).resolve().parent
    if not CHECKOUT_PACKAGE.is_dir() or imported == CHECKOUT_PACKAGE:
        return
    stale = stale_modules(CHECKOUT_PACKAGE, imported)
    if stale:
        shown = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        verb = "differs" if len(stale) == 1 else "differ"
        pytest.exit(
            f"the imported anyio_iocp ({imported}) is not this checkout's: {shown} "
            f"{verb}. Reinstall it (bash scripts/setup.sh), or run with PYTHONPATH=. "
            "to test the checkout's own files.",
            returncode=4,
        )


@pytest.fixture
def engine_name(anyio_backend: tuple[str, dict[str, Any]]) -> str:
    return str(anyio_backend[1]["engine"])


@pytest.fixture
def moved_clock(monkeypatch: pytest.MonkeyPatch) -> MovedClock:
    """``time.monotonic`` replaced by a clock that only the test moves."""
    clock = MovedClock()
    monkeypatch.setattr(time, "monotonic", clock)
    return clock


@pytest.fixture
def trace_events() -> Iterator[list[anyio_iocp.TraceEvent]]:
    """The trace on for one test; the events it emitted, in order."""
    events: list[anyio_iocp.TraceEvent] = []
    was_on = anyio_iocp.trace_enabled()
    anyio_iocp.enable_trace(events.append)
    try:
        yield events
    finally:
        anyio_iocp.disable_trace(events.append)
        if not was_on:
            anyio_iocp.disable_trace()
