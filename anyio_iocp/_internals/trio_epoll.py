"""Trio's private epoll I/O manager, reached only where it is what this
package was written against.

Two reaches go through here: the io_uring engine puts its ring's descriptor
into the manager's epoll set (:func:`epoll_set_for`, used by
``_engines/io_uring/wakeup.py``), and :mod:`.pass_hooks` gives the manager a
subclass that calls the engine once per pass.  Both need the same checks
first, here: Trio is the minor release this was written for
(:data:`~.versions.TESTED_TRIO`), the current run's manager is Trio's
``EpollIOManager`` (or the subclass ``pass_hooks`` gave it) and holds a real
``select.epoll``.  Anything else (another Trio, internals moved or renamed,
another platform's manager) answers None, and the caller keeps the public way.
"""

from __future__ import annotations

import select
from collections import defaultdict
from typing import Any

from anyio_iocp._internals.versions import TESTED_TRIO, written_for


def current_epoll_manager() -> tuple[Any, Any, type] | None:
    """``(runner, manager, EpollIOManager)`` of the current Trio run, or None."""
    if not written_for("trio", TESTED_TRIO):
        return None
    try:
        from trio._core._io_epoll import EpollIOManager
        from trio._core._run import GLOBAL_RUN_CONTEXT

        runner = GLOBAL_RUN_CONTEXT.runner
    except (ImportError, AttributeError):
        return None
    manager = getattr(runner, "io_manager", None)
    if not isinstance(manager, EpollIOManager) or not isinstance(
        getattr(manager, "_epoll", None), select.epoll
    ):
        return None
    return runner, manager, EpollIOManager


def epoll_set_for(fd: int) -> select.epoll | None:
    """The current run's epoll set, where ``fd`` may be added without Trio
    knowing it (Trio tolerates events of descriptors it does not track), or
    None where that cannot be done safely (``fd`` is Trio's, or the manager is
    not the one this was written for)."""
    found = current_epoll_manager()
    if found is None:
        return None
    _runner, manager, _class = found
    registered = getattr(manager, "_registered", None)
    if not isinstance(registered, defaultdict) or fd in registered:
        return None  # (a defaultdict: Trio tolerates events of unknown descriptors)
    epoll: select.epoll = manager._epoll
    return epoll
