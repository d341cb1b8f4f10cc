"""A look for completions before the loop sleeps, when its sleeps are short.

The problem
-----------
A server that answers one connection at a time (a request, its answer, the
next request) spends most of each exchange asleep in ``epoll_wait``, and on
these virtual machines a sleep that ends with the peer's next request costs
more than the exchange itself: with the load generator on the other CPU, the
engine's round trip was 77-82 us against Trio's 53-57 us and the C floor's
60-66 us (``docs/performance.md``, twelfth pass).  Trio was faster only because it
was slower: the peer's answer often arrived before it was ready to sleep.

What this module does
---------------------
Before a pass that may block, the engine looks at the completion ring for up
to ``spin_seconds`` (150 us by default) while the loop's last sleep was that
short or shorter: a peer that answered within the window last time is likely
to do so again.  A sleep that was longer (an idle connection, a server
between bursts), or that something other than a completion ended, turns the
look off until a sleep is short again, so an idle server looks at most once
per burst that ends, for at most the window.
``backend_options={"spin": 0}`` or ``ANYIO_IOCP_SPIN=0`` turns it off.

The traps
---------
* The ring is set up with ``IORING_SETUP_COOP_TASKRUN``: a completion that
  arrives while the task runs in user space is posted to the ring only when
  the task next enters the kernel.  A look that only read the ring would
  see it at the next timer tick, long after the window (one run: 133 us of
  CPU per round trip instead of 46); each turn of the look makes a system
  call (``sched_yield``), whose way back runs that work.
* ``sched_yield`` also lets another task of this CPU run, which matters when
  the peer shares the CPU: the peer answers during the look instead of
  waiting for the look to end.
* Only the ring is looked at: a wake-up through Trio's epoll set (a stream
  in a burst waiting for readiness, a task's ``wait_readable``, a thread's
  ``run_sync_soon``) is not seen by a look, which would spend its whole
  window for nothing.  So a pass that completions did not end turns the
  look off, whatever its length (a review found the look made on every
  second pass there).
* The look spends part of the pass's timeout: the engine returns what is
  left, and the pass hooks wait for that, so a deadline is not pushed back
  (:mod:`anyio_iocp._internals.pass_hooks`).  Where Trio's instrument calls
  the engine instead (guest mode, or hooks refused) the wait cannot be
  shortened, and in guest mode a look would hold up the host's loop: there
  the run sets ``spin_seconds`` to 0 (:mod:`anyio_iocp._face.runstate`).
"""

from __future__ import annotations

import math
import os
from time import perf_counter
from typing import Any

from anyio_iocp._engines.io_uring._uring import lib


def look_for_completions(ring: Any, seconds: float) -> bool:
    """Look at the completion ring for up to ``seconds``; whether it holds
    completions at the end."""
    end = perf_counter() + seconds
    ready = lib.iou_cq_ready
    while not ready(ring):
        if perf_counter() >= end:
            return False
        os.sched_yield()  # (a system call: its way back posts pending completions)
    return True


class SpinState:
    """When the engine looks before a sleep, and how often it found something."""

    __slots__ = ("found", "last_sleep", "looks", "sleep_from")

    def __init__(self) -> None:
        #: the length of the loop's last pass that could block (its look and
        #: its sleep), in seconds; none yet: no look before the first
        self.last_sleep = math.inf
        #: when the current pass that may block began (0.0: none)
        self.sleep_from = 0.0
        #: looks made, and those that found completions
        self.looks = 0
        self.found = 0
