"""Schedule points on a budget: when a stream call that did not wait yields.

The model
---------
Trio makes every socket call a *schedule point*: even a ``receive()`` that
finds its bytes already there lets the other tasks run before it returns.  On
a busy connection that is one trip through the scheduler per message, and the
trip costs more than the message (``docs/performance.md``).  A call that did
not wait only *needs* to yield so that no task keeps the others (and the I/O
wait, and the deadlines) waiting for long.

So the stream layer (:mod:`anyio_iocp._streams.sockets`) yields after a call
that completed without waiting only when the *budget* has run out: when the
current scheduler pass started more than ``seconds`` ago.  The task that runs
now started after that pass began, so it cannot have run for longer than
that without yielding.  A call that waited has yielded already and adds no
second schedule point.

What stays as in Trio
---------------------
* Every call is a cancel point: cancellation and deadlines are checked first,
  by every call (``checkpoint_if_cancelled``), before any byte moves.
* A KeyboardInterrupt reaches the main task at its next call, as before.
* Other tasks, expired deadlines and the I/O wait get their turn at least
  once per budget (plus the length of one call).

The strict rule, a schedule point on every call as in Trio, is the setting
``schedule="strict"`` (``backend_options`` or ``$ANYIO_IOCP_SCHEDULE``): its
budget is minus infinity, so every call that did not wait yields.  The
budget's length is ``budget=`` (``backend_options`` or ``$ANYIO_IOCP_BUDGET``,
in seconds; :mod:`anyio_iocp._face.schedule`).

How it is kept cheap
--------------------
Each engine calls :meth:`ScheduleBudget.new_pass` once per pass, from the hook
that runs after Trio's I/O wait.  A stream call reads ``passes`` before and
after the engine call (a change means it waited) and compares the clock with
``deadline``: two attribute reads, one clock read, no call into the
scheduler.
"""

from __future__ import annotations

import math
from time import perf_counter

#: the accepted values of the ``schedule`` setting
SCHEDULES = ("budget", "strict")
#: how long a task may run on stream calls that do not wait before it yields
#: (Trio issue #1757 names 0.5 to 5 ms; see docs/performance.md for the choice)
BUDGET_SECONDS = 0.001


class ScheduleBudget:
    """The run's budget: the end of the current pass's budget, and a pass count."""

    __slots__ = ("deadline", "passes", "seconds", "strict")

    def __init__(self, schedule: str = "budget", seconds: float = BUDGET_SECONDS) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {schedule!r}: expected one of {', '.join(map(repr, SCHEDULES))}"
            )
        if schedule == "budget" and not (isinstance(seconds, float) and seconds > 0):
            raise ValueError(f"a budget must be a positive number of seconds, got {seconds!r}")
        #: a schedule point on every call, as in Trio
        self.strict = schedule == "strict"
        #: minus infinity in strict mode: every deadline has passed already
        self.seconds = -math.inf if self.strict else seconds
        #: calls that did not wait yield once the clock reaches it
        self.deadline = -math.inf
        #: scheduler passes seen (a call that waited saw at least one)
        self.passes = 0

    @property
    def schedule(self) -> str:
        return "strict" if self.strict else "budget"

    def new_pass(self) -> None:
        """Called once per scheduler pass, after Trio's I/O wait."""
        self.passes += 1
        self.deadline = perf_counter() + self.seconds

    def exhausted(self) -> bool:
        """The current task must yield at its next call that does not wait."""
        return perf_counter() >= self.deadline
