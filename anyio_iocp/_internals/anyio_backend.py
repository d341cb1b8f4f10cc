"""AnyIO's private interface this backend is built on, checked first.

AnyIO's ``AsyncBackend`` is private and changes between minor releases (its
maintainer declined a public plugin hook, AnyIO PR #810).  ``pyproject.toml``
pins the range the test suite runs against; :func:`check_anyio` fails at
start, with a message that says what is missing, when a different AnyIO is
installed anyway.  The private names the package uses are imported from here
only, after that check.
"""

from __future__ import annotations

from anyio_iocp._internals.versions import TESTED_ANYIO, TESTED_TRIO, installed

#: (module, attribute) pairs this backend relies on
REQUIRED = (
    ("anyio._backends._trio", "TrioBackend"),
    ("anyio._backends._trio", "TestRunner"),
    ("anyio._core._eventloop", "claim_worker_thread"),
    ("anyio._core._sockets", "convert_ipv6_sockaddr"),
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
        raise IncompatibleAnyIOError(
            f"anyio-iocp supports AnyIO {TESTED_ANYIO}.x with Trio {TESTED_TRIO}.x; "
            f"the installed AnyIO {installed('anyio')} lacks: " + "; ".join(problems)
        )


check_anyio()

from anyio._backends._trio import TestRunner, TrioBackend  # noqa: E402
from anyio._core._eventloop import claim_worker_thread  # noqa: E402
from anyio._core._sockets import convert_ipv6_sockaddr  # noqa: E402

__all__ = [
    "IncompatibleAnyIOError",
    "TestRunner",
    "TrioBackend",
    "check_anyio",
    "claim_worker_thread",
    "convert_ipv6_sockaddr",
]
