"""Automatic Burst Detection (iocpsock's ``-recvburst``), one small object per
stream, used by every engine.

A stream posts ``k`` receives ahead of its reader.  ``k`` starts at 1, grows by
one for every receive that comes back full (the sender outruns the reader),
and shrinks by one for every receive that comes back partly filled, within
``1..cap`` (the stream's ``recvburst``).  A burst is under way while the last
receive came back full and ``k > 1``: the receive pool then posts its next
``k`` receives as soon as the reader has taken what the previous ones brought,
ahead of the next ``receive()``.  Bytes held ahead of the reader are therefore
bounded by ``k * buffersize``, or by ``burst_read_buffers - 1`` buffers where
the receive pool reads several in one call (IOCP, with nothing posted ahead).

The detector only counts; posting belongs to the receive pool and the engine.
Every move of ``k`` is counted in the run's statistics and, when the trace is
on, reported as an ``abd.pool`` event.
"""

from __future__ import annotations

import socket

from anyio_iocp._interface import trace as _trace
from anyio_iocp._interface.stats import EngineCounters


class BurstDetector:
    __slots__ = ("bursting", "cap", "changes", "counters", "k", "peak", "sock")

    def __init__(self, sock: socket.socket, counters: EngineCounters, cap: int = 1) -> None:
        self.sock = sock
        #: the run's counters, where every move of k is counted
        self.counters = counters
        #: receives to post ahead, within 1..cap
        self.k = 1
        #: the stream's recvburst
        self.cap = cap
        #: the last receive came back full
        self.bursting = False
        #: the largest k of the stream's life, and how often k moved
        self.peak = 1
        self.changes = 0

    def observe(self, full: bool) -> None:
        """A receive completed: ``full`` if it filled its whole buffer."""
        self.bursting = full
        k = self.k
        if full:
            if k >= self.cap:
                return
            k += 1
            if k > self.peak:
                self.peak = k
        elif k > 1:
            k -= 1
        else:
            return
        self.k = k
        self.changes += 1
        self.counters.abd_moved(k)
        if _trace.active:
            fd = self.sock.fileno()
            _trace.emit(
                "abd.pool",
                f"fd {fd}: receive pool k={k} of {self.cap} "
                f"({'full receive' if full else 'partial receive'})",
                fd=fd,
                k=k,
                cap=self.cap,
                full=full,
            )

    def in_burst(self) -> bool:
        """A burst is under way: receives should be posted ahead of the reader."""
        return self.bursting and self.k > 1

    def set_cap(self, cap: int) -> None:
        """A new recvburst (validated by the caller); k stays within it."""
        self.cap = cap
        if self.k > cap:
            self.k = cap
