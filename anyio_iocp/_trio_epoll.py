"""Trio's private epoll I/O manager, reached only where it is what this
package was written against.

Two modules reach into it: :mod:`._uring_wakeup` puts the io_uring's
descriptor into its epoll set, and :mod:`._pass_hooks` gives it a subclass
that calls the engine once per pass.  Both need the same checks first, here:
the current run's manager is Trio's ``EpollIOManager`` (or the subclass
``_pass_hooks`` gave it) and holds a real ``select.epoll``.  Anything else (a
Trio that moved or renamed these, another platform's manager) answers None,
and the caller keeps the public way.
"""

from __future__ import annotations

import select
from typing import Any


def current_epoll_manager() -> tuple[Any, Any, type] | None:
    """``(runner, manager, EpollIOManager)`` of the current Trio run, or None."""
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
