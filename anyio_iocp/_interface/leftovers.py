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

from anyio_iocp._interface.engine import ListenerIO, StreamIO


class Leftovers:
    def __init__(self) -> None:
        self._open: set[StreamIO | ListenerIO] = set()
        #: bytes moved by the streams closed so far (for the run's statistics)
        self.closed_bytes_in = 0
        self.closed_bytes_out = 0

    def add(self, io: StreamIO | ListenerIO) -> None:
        self._open.add(io)

    def discard(self, io: StreamIO | ListenerIO) -> None:
        if io in self._open:
            self._open.remove(io)
            self.closed_bytes_in += io.bytes_in
            self.closed_bytes_out += io.bytes_out

    def bytes_moved(self) -> tuple[int, int]:
        """(in, out) of every stream of the run, open or closed."""
        open_in = sum(io.bytes_in for io in self._open)
        open_out = sum(io.bytes_out for io in self._open)
        return self.closed_bytes_in + open_in, self.closed_bytes_out + open_out

    def kinds(self) -> dict[str, int]:
        """How many streams and listeners are still open."""
        streams = sum(isinstance(io, StreamIO) for io in self._open)
        return {"streams": streams, "listeners": len(self._open) - streams}

    def __len__(self) -> int:
        return len(self._open)

    def close_all(self) -> None:
        """End of the run: nothing is in flight any more; close what is left."""
        left, self._open = self._open, set()
        for io in left:
            with contextlib.suppress(OSError):
                io.abandon()
