"""Pytest plugin that runs AnyIO's own test suite against the "iocp" backend.

Loaded with ``-p plugin`` by ``conformance/anyio_suite.py`` (which puts this directory on
``PYTHONPATH``).  AnyIO's files stay untouched; the plugin:

* re-parametrises the ``anyio_backend`` fixture of AnyIO's ``tests/conftest.py``
  over :data:`BACKEND_PARAMS` (trio as the reference, then the iocp engines of
  ``CONFORMANCE_ENGINES``, default ``io_uring,readiness,io_uring+strict``; a
  ``+strict`` entry runs that engine with ``schedule="strict"``, a schedule
  point on every stream call, where the others keep the default budget).
  It does so with a ``parametrize`` mark added to each test that requests the
  fixture, before pytest's own hooks run: pytest then parametrises from the
  mark (``indirect=True``, so AnyIO's fixture still produces the value) and its
  fixture manager skips the conftest's own params, exactly as for a test that
  carries ``@pytest.mark.parametrize("anyio_backend", ...)`` itself;
* deselects, with a reason each, what anyio_suite.py lists (``CONFORMANCE_CONFIG``), the
  tests that do not request ``anyio_backend`` (they cannot exercise a backend) and
  the tests that pin ``anyio_backend`` to a backend themselves (asyncio or trio);
* writes one JSON line per test outcome (``CONFORMANCE_REPORT``) as tests finish,
  so that a run killed half-way still leaves its results.  Each line carries the
  backend id and a *key* that is the same for the three backend variants of one
  test (the node id without the backend, with the other parameters' indices),
  which is what anyio_suite.py compares across backends;
* counts, per test, the TCP streams and listeners that anyio_iocp created and
  through which engine (a wrapper around their ``__init__``, behaviour unchanged),
  so that the report can show that the iocp variants really went through the
  engines and the trio ones did not;
* with ``"only"`` in the config (anyio_suite.py's rerun of failures), runs just those
  node ids.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

#: the iocp backend's engines to run beside trio (Linux: io_uring and readiness;
#: anyio_suite.py's Wine run sets ``iocp,readiness``)
ENGINES = [
    name
    for name in os.environ.get("CONFORMANCE_ENGINES", "io_uring,readiness,io_uring+strict").split(
        ","
    )
    if name
]


def _options(entry: str) -> dict[str, str]:
    """``engine`` or ``engine+strict`` -> the backend options."""
    engine, _, schedule = entry.partition("+")
    return {"engine": engine, "schedule": schedule or "budget"}


BACKEND_PARAMS: list[Any] = [
    pytest.param(("trio", {}), id="trio"),
    *(pytest.param(("iocp", _options(name)), id=f"iocp+{name}") for name in ENGINES),
]
REFERENCE_ID = "trio"
BACKEND_IDS = {param.values[0][0] + repr(param.values[0][1]): param.id for param in BACKEND_PARAMS}

REASON_NO_BACKEND = (
    "backend-independent: does not request the anyio_backend fixture, so it runs the "
    "same with or without the iocp backend"
)
REASON_PINNED = "pinned by the test itself to anyio_backend={value}, not parametrised over backends"


_usage: Counter[str] = Counter()


def _instrument_engines() -> None:
    """Count the engine objects each test creates, as ``class:engine``."""
    try:
        from anyio_iocp._streams import datagrams as _datagrams
        from anyio_iocp._streams import sockets as _streams
    except ImportError:
        return
    for cls in (_streams.EngineSocketStream, _streams.EngineTCPListener):
        original: Any = cls.__init__

        # (more arguments after the engine, as a listener's, are passed on)
        def init(self: Any, io: Any, engine: Any, *more: Any, _original: Any = original) -> None:
            _original(self, io, engine, *more)
            _usage[f"{type(self).__name__}:{engine.info.name}"] += 1

        cls.__init__ = init  # type: ignore[method-assign]
    original_datagrams: Any = _datagrams._EngineDatagrams.__init__

    def init_datagrams(self: Any, io: Any, info: Any, budget: Any) -> None:
        original_datagrams(self, io, info, budget)
        _usage[f"{type(self).__name__}:{info.name}"] += 1

    _datagrams._EngineDatagrams.__init__ = init_datagrams  # type: ignore[method-assign]


def _backend_id(value: object) -> str | None:
    if isinstance(value, tuple) and len(value) == 2:
        return BACKEND_IDS.get(f"{value[0]}{value[1]!r}")
    return None


def _load_config() -> dict[str, Any]:
    path = os.environ.get("CONFORMANCE_CONFIG")
    if not path:
        return {"deselect": {}}
    config: dict[str, Any] = json.loads(Path(path).read_text())
    return config


class _Reporter:
    def __init__(self, path: str | None) -> None:
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self._phases: dict[str, dict[str, Any]] = {}
        #: nodeid -> {"backend": id, "key": cross-backend key}, filled at collection
        self.meta: dict[str, dict[str, str]] = {}

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def log(self, report: pytest.TestReport) -> None:
        entry = self._phases.setdefault(
            report.nodeid, {"outcome": None, "duration": 0.0, "longrepr": ""}
        )
        entry["duration"] += report.duration
        outcome: str | None = None
        if report.when == "call":
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            else:
                outcome = report.outcome
        elif report.failed:
            outcome = "error"  # setup or teardown failed
        elif report.skipped:
            outcome = "skipped"
        if outcome is not None and entry["outcome"] not in ("error", "failed"):
            # a teardown error after a passed call makes the test an error
            entry["outcome"] = outcome
        if report.failed or (report.skipped and report.when != "call"):
            text = report.longreprtext
            entry["longrepr"] += f"[{report.when}] {text[-6000:]}\n"
        if report.when == "teardown":
            self._phases.pop(report.nodeid)
            entry["engine_objects"] = dict(_usage)
            _usage.clear()
            meta = self.meta.get(report.nodeid, {"backend": "?", "key": report.nodeid})
            self.write({"type": "test", "nodeid": report.nodeid, **meta, **entry})


_reporter: _Reporter | None = None
_config: dict[str, Any] = {}


def pytest_configure(config: pytest.Config) -> None:
    global _reporter, _config
    _config = _load_config()
    _reporter = _Reporter(os.environ.get("CONFORMANCE_REPORT"))
    _instrument_engines()


def pytest_unconfigure(config: pytest.Config) -> None:
    if _reporter is not None:
        _reporter.close()


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "anyio_backend" not in metafunc.fixturenames:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        if isinstance(names, str):
            names = [name.strip() for name in names.split(",")]
        if "anyio_backend" in names:
            return  # the test pins its own backends; deselected below
    metafunc.definition.add_marker(
        pytest.mark.parametrize("anyio_backend", BACKEND_PARAMS, indirect=True)
    )


def _deselect_reason(item: pytest.Item, explicit: dict[str, str]) -> str | None:
    base = item.nodeid.split("[", 1)[0]
    for key in (item.nodeid, base):
        if key in explicit:
            return explicit[key]
    # a whole class or module listed
    for key, reason in explicit.items():
        if base.startswith(key + "::"):
            return reason
    if "anyio_backend" not in getattr(item, "fixturenames", ()):
        return REASON_NO_BACKEND
    callspec = getattr(item, "callspec", None)
    value = callspec.params.get("anyio_backend") if callspec is not None else None
    if _backend_id(value) is None:
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], dict):
            value = f"{value[0]} (options: {', '.join(sorted(value[1]))})"
        return REASON_PINNED.format(value=value)
    return None


def _idlist(item: pytest.Item) -> list[str]:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return []
    ids = getattr(callspec, "_idlist", None)  # one id per parametrize call, in order
    return list(ids) if ids is not None else callspec.id.split("-")


def _keys(items: list[pytest.Item], backends: dict[str, str]) -> dict[str, str]:
    """Node id -> the same key for the three backend variants of one test.

    The key is the node id without the backend's id.  The backend's position in
    the ids is the same for every variant of one test function; it is found from
    an iocp variant, whose id cannot be confused with another parameter's (trio's
    could: ``test_from_async[trio-trio]`` has a portal backend named trio too).
    """
    position: dict[str, int] = {}
    for item in items:
        backend = backends[item.nodeid]
        ids = _idlist(item)
        if backend != REFERENCE_ID and backend in ids:
            position.setdefault(item.nodeid.split("[", 1)[0], ids.index(backend))
    keys: dict[str, str] = {}
    for item in items:
        base = item.nodeid.split("[", 1)[0]
        ids = _idlist(item)
        backend = backends[item.nodeid]
        at = position.get(base, ids.index(backend) if backend in ids else -1)
        if 0 <= at < len(ids) and ids[at] == backend:
            del ids[at]
        keys[item.nodeid] = f"{base}[{'-'.join(ids)}]"
    return keys


def _mark_inherited_trio_bug(item: pytest.Item) -> None:
    """AnyIO xfails TestBlockingPortal.test_from_async for a trio portal opened
    from a trio loop (Trio's bug, AnyIO #525), but only when the backend is
    named "trio".  The iocp backend runs the same Trio loop, so the same bug
    applies; without the mark the test hangs until the timeout."""
    callspec = getattr(item, "callspec", None)
    if callspec is None or getattr(item, "originalname", "") != "test_from_async":
        return
    backend = _backend_id(callspec.params.get("anyio_backend")) or ""
    if backend.startswith("iocp") and callspec.params.get("portal_backend_name") == "trio":
        item.add_marker(
            pytest.mark.xfail(reason="Trio's known bug (AnyIO #525), inherited", run=False)
        )


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    explicit: dict[str, str] = _config.get("deselect", {})
    only: set[str] | None = set(_config["only"]) if "only" in _config else None
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        if only is not None and item.nodeid not in only:
            dropped.append(item)
            continue
        _mark_inherited_trio_bug(item)
        reason = _deselect_reason(item, explicit)
        if reason is None:
            kept.append(item)
        else:
            dropped.append(item)
            if _reporter is not None:
                _reporter.write({"type": "deselected", "nodeid": item.nodeid, "reason": reason})
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    if _reporter is not None:
        backends: dict[str, str] = {}
        for item in kept:
            callspec = getattr(item, "callspec", None)
            value = callspec.params.get("anyio_backend") if callspec is not None else None
            backends[item.nodeid] = _backend_id(value) or "?"
        for nodeid, key in _keys(kept, backends).items():
            _reporter.meta[nodeid] = {"backend": backends[nodeid], "key": key}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _reporter is not None:
        _reporter.log(report)
