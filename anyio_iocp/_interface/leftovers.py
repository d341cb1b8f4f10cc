"""Streams and listeners that the program leaves open: dropped without
``aclose()`` during the run, or still open when it ends.

The run keeps a strong reference to each stream's and listener's engine side
until it is closed, so that no socket is closed half-way by the garbage
collector (with a ``ResourceWarning``) while the engine may still have
operations posted on it: the kernel may write into their buffers until their
completions arrive.

* **Dropped during the run**: when the program lets go of a stream or a
  listener without closing it, its object is collected, and the stream layer
  hands its engine side to :meth:`Leftovers.dropped`.  The run then closes it
  in a system task, as ``aclose()`` would have: write-behind sends go out
  (bounded), operations in flight are cancelled and drained, and the socket
  is closed.  Its descriptor is free again while the run goes on, as with
  Trio, where the garbage collector closes a dropped socket.  This is quiet: the
  program may not know when its last reference went (a traceback may hold it).
  The request goes through the run's token (``run_sync_soon``), since the
  collector may run anywhere: inside another task's code, or in a worker
  thread.
  A stream dropped as the run ends (the program returns without closing
  it) is left to the end of the run instead: its close task would start
  cancelled and could not let write-behind bytes out anyway.
* **Open when the run ends**: after the engine has cancelled and drained every
  operation and closed its ring, each one left is abandoned: its socket, and
  for a listener the connections accepted ahead of it, are closed, quietly.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable

import trio

from anyio_iocp._interface.engine import ListenerIO, StreamIO

_log = logging.getLogger("anyio_iocp")

#: what closes something else first (a listener's idle gate)
Closer = Callable[[], Awaitable[None]]


class Leftovers:
    def __init__(self) -> None:
        self._open: set[StreamIO | ListenerIO] = set()
        #: bytes moved by the streams closed so far (for the run's statistics)
        self.closed_bytes_in = 0
        self.closed_bytes_out = 0
        #: the run's token (set when the run's engine starts)
        self.token: trio.lowlevel.TrioToken | None = None
        #: streams and listeners closed because they were dropped unclosed
        self.dropped_closed = 0
        #: system tasks that close streams and may wait for completions, also
        #: as the run ends: the closes of dropped streams and listeners under
        #: way, and the listeners' idle gates (an engine whose loop wake-ups
        #: come from a system task keeps waking while any runs)
        self.closing = 0

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

    def dropped(self, io: StreamIO | ListenerIO, first: Closer | None = None) -> None:
        """The object that owned ``io`` was collected without being closed:
        close ``io`` soon, in a system task of the run, after awaiting
        ``first`` (a listener's idle gate).  Called by the garbage collector,
        from any thread; once the run is over, :meth:`close_all` closes it
        instead."""
        token = self.token
        if token is None or io not in self._open:
            return
        # (run_sync_soon is safe from any thread, and from a finalizer)
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(self._spawn_close, io, first)

    def _spawn_close(self, io: StreamIO | ListenerIO, first: Closer | None) -> None:
        if io not in self._open:
            return
        with contextlib.suppress(RuntimeError):  # the run is ending: close_all closes it
            trio.lowlevel.spawn_system_task(
                self._close_dropped,
                io,
                first,
                name="anyio_iocp: closing a dropped stream or listener",
            )

    async def _close_dropped(self, io: StreamIO | ListenerIO, first: Closer | None) -> None:
        if trio.current_effective_deadline() == -math.inf:
            # spawned as the run ends (the program returned, dropping it): the
            # engine ends its operations and close_all closes it, after the run
            return
        self.closing += 1
        try:
            if first is not None:
                await first()
            await io.close()  # ends every operation in flight, also when cancelled
        except OSError:  # a send error nobody is left to hear, or the engine is gone
            with contextlib.suppress(OSError):
                io.abandon()
        except Exception:  # a bug: this system task must not end the program's run
            _log.exception("closing a dropped stream or listener failed; its socket is closed")
            with contextlib.suppress(OSError):
                io.abandon()
        finally:
            self.closing -= 1
            if io in self._open:
                self.dropped_closed += 1
            self.discard(io)

    def close_all(self) -> None:
        """End of the run: nothing is in flight any more; close what is left."""
        left, self._open = self._open, set()
        for io in left:
            with contextlib.suppress(OSError):
                io.abandon()
