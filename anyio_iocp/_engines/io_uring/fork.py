"""io_uring rings and ``os.fork()``.

A forked child inherits the parent's ring: its descriptor, and the shared
mappings of its submission and completion queues.  If the child submitted or
reaped there, it would steal the parent's completions or post operations on
memory only the parent can see.  So, right after a fork, the child lets go of
every ring it inherited (:meth:`UringEngine.disown`): it closes its copy of
the descriptor, unmaps its copy of the queues and marks the engine closed, so
that a stream kept from the parent fails with a clear error instead of
touching the parent's ring.  The parent's ring is unaffected: the kernel
keeps it for the parent.  A run started in the child creates its own ring.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class _Disownable(Protocol):
    def disown(self) -> None: ...


_live: weakref.WeakSet[_Disownable] = weakref.WeakSet()


def track(engine: _Disownable) -> None:
    """Remember a ring-owning engine of this process (until it is collected)."""
    _live.add(engine)


def _after_fork_in_child() -> None:
    for engine in list(_live):
        engine.disown()
    _live.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
