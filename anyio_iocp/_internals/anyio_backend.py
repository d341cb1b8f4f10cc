"""AnyIO's private interface this backend is built on, checked first.

AnyIO's ``AsyncBackend`` is private and changes between minor releases (its
maintainer declined a public plugin hook, AnyIO PR #810).  ``pyproject.toml``
pins the range the test suite runs against; :func:`check_anyio` fails at
start, with a message that says what is missing, when a different AnyIO is
installed anyway.  The private names the package uses are imported from here
only, after that check.
"""

from __future__ import annotations

from typing import Any

from anyio_iocp._internals.versions import TESTED_ANYIO, TESTED_TRIO, installed, written_for

#: (module, attribute) pairs this backend relies on
REQUIRED = (
    ("anyio._backends._trio", "TrioBackend"),
    ("anyio._backends._trio", "TestRunner"),
    ("anyio._core._eventloop", "claim_worker_thread"),
    ("anyio._core._sockets", "convert_ipv6_sockaddr"),
    ("anyio", "ResourceGuard"),
    ("anyio._backends._trio", "TaskGroup"),
)
REQUIRED_METHODS = (
    "run",
    "connect_tcp",
    "create_tcp_listener",
    "wrap_listener_socket",
    "wrap_stream_socket",
    "run_sync_in_worker_thread",
    "create_test_runner",
)


class IncompatibleAnyIOError(RuntimeError):
    """The installed AnyIO (or Trio) lacks something this backend relies on."""


def check_anyio() -> None:
    import importlib

    problems: list[str] = []
    for module_name, attr in REQUIRED:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            problems.append(f"cannot import {module_name} ({exc})")
            continue
        if not hasattr(module, attr):
            problems.append(f"{module_name}.{attr} is missing")
    if not problems:
        from anyio._backends._trio import TrioBackend

        problems.extend(
            f"TrioBackend.{name} is missing"
            for name in REQUIRED_METHODS
            if not hasattr(TrioBackend, name)
        )
    if problems:
        raise IncompatibleAnyIOError(
            f"anyio-iocp supports AnyIO {TESTED_ANYIO}.x with Trio {TESTED_TRIO}.x; "
            f"the installed AnyIO {installed('anyio')} lacks: " + "; ".join(problems)
        )


check_anyio()

from anyio._backends._trio import TaskGroup as _TrioTaskGroup  # noqa: E402
from anyio._backends._trio import TestRunner, TrioBackend  # noqa: E402
from anyio._core._eventloop import claim_worker_thread  # noqa: E402
from anyio._core._sockets import convert_ipv6_sockaddr  # noqa: E402

#: whether :func:`trio_nursery` may read a task group's nursery: decided once,
#: when the first listener is made (:func:`check_nursery_reach`; AnyIO's version
#: comes from its metadata, some 9 ms of imports that a run's start does not pay)
_nursery_checked: bool | None = None


def check_nursery_reach() -> bool:
    """AnyIO is the release this was written for, and its Trio task group
    sets ``_nursery`` and ``_active`` when it is entered (checked once)."""
    global _nursery_checked
    if _nursery_checked is None:
        enter = getattr(getattr(_TrioTaskGroup, "__aenter__", None), "__code__", None)
        names = set(getattr(enter, "co_names", ()))
        _nursery_checked = {"_nursery", "_active"} <= names and written_for("anyio", TESTED_ANYIO)
    return _nursery_checked


def trio_nursery(task_group: object) -> Any:
    """The Trio nursery of an active task group of AnyIO's Trio backend
    (``TaskGroup._nursery``, set when it is entered), or None for any other
    task group, and where AnyIO is not the release this was written for: a
    listener's ``serve()`` starts its connections' tasks there
    (``_streams/serving.py``)."""
    if type(task_group) is not _TrioTaskGroup or not getattr(task_group, "_active", False):
        return None
    if not check_nursery_reach():
        return None
    return getattr(task_group, "_nursery", None)


__all__ = [
    "IncompatibleAnyIOError",
    "TestRunner",
    "TrioBackend",
    "check_anyio",
    "check_nursery_reach",
    "claim_worker_thread",
    "convert_ipv6_sockaddr",
    "trio_nursery",
]
