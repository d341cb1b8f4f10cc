"""Streams and listeners that the program leaves open when its run ends.

``anyio.run`` may return or raise while streams and listeners are still open
(never closed, or dropped without ``aclose()``).  The run keeps a strong
reference to each one until it is closed, so that none is closed half-way by
the garbage collector (with a ``ResourceWarning``) while the engine may still
have operations posted on it.  When the run ends, after the engine has
cancelled and drained every operation and closed its ring, each one left is
abandoned: its socket, and for a listener the connections accepted ahead of
it, are closed, quietly.
"""

from __future__ import annotations

import contextlib

from ._engine import ListenerIO, StreamIO


class Leftovers:
    def __init__(self) -> None:
        self._open: set[StreamIO | ListenerIO] = set()

    def add(self, io: StreamIO | ListenerIO) -> None:
        self._open.add(io)

    def discard(self, io: StreamIO | ListenerIO) -> None:
        self._open.discard(io)

    def __len__(self) -> int:
        return len(self._open)

    def close_all(self) -> None:
        """End of the run: nothing is in flight any more; close what is left."""
        left, self._open = self._open, set()
        for io in left:
            with contextlib.suppress(OSError):
                io.abandon()
