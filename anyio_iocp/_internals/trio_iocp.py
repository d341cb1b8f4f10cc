"""Trio's Windows completion-port API, as the IOCP engine uses it.

``trio.lowlevel.current_iocp()`` and ``trio.lowlevel.monitor_completion_key()``
exist only on Windows (Trio's Linux type stubs do not have them) and Trio
marks its IOCP API as subject to change.  The engine reaches them through
here, after a check that they exist, with a message that names what is
missing otherwise.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import trio

from anyio_iocp._internals.versions import TESTED_TRIO, installed

#: the functions of ``trio.lowlevel`` the IOCP engine is built on
REQUIRED = ("current_iocp", "monitor_completion_key")


def _lowlevel() -> Any:
    missing = [name for name in REQUIRED if not hasattr(trio.lowlevel, name)]
    if missing:
        raise RuntimeError(
            f"the iocp engine needs trio.lowlevel.{' and '.join(missing)} (Windows, "
            f"Trio {TESTED_TRIO}.x); the installed Trio {installed('trio')} lacks them"
        )
    return trio.lowlevel


def current_iocp() -> int:
    """The handle of the current run's completion port."""
    handle: int = _lowlevel().current_iocp()
    return handle


def monitor_completion_key() -> AbstractContextManager[tuple[int, Any]]:
    """A completion key of the current run's port and the queue of its packets."""
    monitor: AbstractContextManager[tuple[int, Any]] = _lowlevel().monitor_completion_key()
    return monitor
