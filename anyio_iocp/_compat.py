"""Checks that the installed AnyIO has the private interface this backend uses.

AnyIO's ``AsyncBackend`` is private and changes between minor releases (its
maintainer declined a public plugin hook, AnyIO PR #810).  ``pyproject.toml``
pins the range the test suite runs against; this module fails at start, with
a message that says what is missing, when a different AnyIO is installed anyway.
"""

from __future__ import annotations

from importlib import metadata

TESTED_ANYIO = "4.16"
TESTED_TRIO = "0.35"

#: (module, attribute) pairs this backend relies on
REQUIRED = (
    ("anyio._backends._trio", "TrioBackend"),
    ("anyio._backends._trio", "TestRunner"),
    ("anyio._core._eventloop", "claim_worker_thread"),
    ("anyio", "ResourceGuard"),
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
        try:
            installed = metadata.version("anyio")
        except metadata.PackageNotFoundError:
            installed = "unknown"
        raise IncompatibleAnyIOError(
            f"anyio-iocp supports AnyIO {TESTED_ANYIO}.x with Trio {TESTED_TRIO}.x; "
            f"the installed AnyIO {installed} lacks: " + "; ".join(problems)
        )
