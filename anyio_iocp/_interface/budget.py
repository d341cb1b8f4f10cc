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

A send past the budget leaves its schedule point to the task's next call
-------------------------------------------------------------------------
Once the budget has run out, a ``send()`` that did not wait does not yield
itself: the task's next stream call does.  What usually comes next is a
``receive()``, which goes through a schedule point in any case once the budget
is out (it waits, or it yields after finding its bytes), so a send and the
receive after it make one trip through the scheduler, not two.  On a busy
server (many streams ready in every pass, so the budget runs out early in
each) that halves the trips per request.  A second send by the same task in
the same step (on any stream) yields as before: no task makes two stream
calls past the budget without a schedule point.  The step is told apart by
the task, forgotten at every new pass (:meth:`ScheduleBudget.send_may_defer`).

A stream that sends 128 KiB yields
----------------------------------
The budget pays where the schedule point costs more than the call: small
messages.  A stream that has sent ``BYTE_BUDGET`` bytes (128 KiB) since its
last schedule point yields at that send, whatever the clock says, and does
not leave that schedule point to the task's next call.  Without it, a
producer that never waits (its reader in the same process, as in the demo's
bulk phase) queued a whole socket buffer (4 MiB here, 65 writes of 64 KiB)
within one budget before the reader ran, and the demo's bulk phase ran at
0.8x Trio's rate on io_uring (0.94-0.97x with the byte budget).  Receives
spend no byte budget: a reader that drains its stream while bytes are there
keeps the queue short, and making it yield every 128 KiB halved a sink's
rate with the sender on another CPU.  A call of the stream
that waited, or yielded for the time budget, starts the count again.  The
figures: ``docs/performance.md``, "A stream yields after sending 128 KiB".

What stays as in Trio
---------------------
* Every call is a cancel point: cancellation and deadlines are checked first,
  by every call (``checkpoint_if_cancelled``), before any byte moves (a
  stream's ``aclose()`` checks after closing, as Trio's does).
* A KeyboardInterrupt reaches the main task at its next call, as before.
* Other tasks, expired deadlines and the I/O wait get their turn at least
  once per budget, plus the length of one call, and of what the task does
  between a send and its next call (as after any call made within the budget).
  These are calls on this backend's streams: a stream wrapped around one
  (AnyIO's TLS stream, a buffered reader) may answer a receive from its own
  buffer without calling it, and then only the task's next send yields; the
  bound becomes what the task does across two sends.
* A call that raises is a schedule point as one that returns: a stream call
  that fails without waiting (a closed stream, a reset connection) yields
  when the budget has run out, every time in strict mode, so a task that
  retries it cannot hold the run; a datagram or descriptor call yields
  unless it waited, as when it succeeds, and ``accept()`` is on the budget as
  a stream call is (below).  Cancellation is
  checked before a write-behind send's error is raised, so a Cancelled
  leaves that error for the next call or ``close()``.

Accepts on the budget
---------------------
A listener's ``accept()`` that takes a connection already there (accepted
ahead by the engine, or waiting in the kernel's queue) yields only once the
budget has run out, as a stream call that did not wait.  Trio's yields every
time, so a ``serve()`` loop takes one connection per scheduler pass, and a
pass lasts as long as every connection already served takes to run its step:
a burst of 64 connections arriving at a busy server reached the application
over about 150 ms, each first request waiting its turn.  On the budget the
loop takes such a burst within a pass or two (``docs/performance.md``,
"Accepts on the budget").  Every ``accept()`` is still a cancel point,
checked before a connection is taken.  A stream's ``aclose()`` is on the
budget too: it closes, checks for cancellation, and yields only once the
budget has run out (unless the close waited).

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
#: a stream yields at the send that brings the bytes it sent since its last
#: schedule point to this many (docs/performance.md, "A stream yields after
#: sending 128 KiB")
BYTE_BUDGET = 128 * 1024


class ScheduleBudget:
    """The run's budget: the end of the current pass's budget, and a pass count."""

    __slots__ = ("byte_budget", "deadline", "deferred_task", "passes", "seconds", "strict")

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
        #: a stream yields once it sent this many bytes without a schedule
        #: point (0 in strict mode: every send does)
        self.byte_budget = 0 if self.strict else BYTE_BUDGET
        #: calls that did not wait yield once the clock reaches it
        self.deadline = -math.inf
        #: scheduler passes seen (a call that waited saw at least one)
        self.passes = 0
        #: the task whose send past the budget left its schedule point to the
        #: task's next call, in this pass (None: none did)
        self.deferred_task: object = None

    @property
    def schedule(self) -> str:
        return "strict" if self.strict else "budget"

    def new_pass(self) -> None:
        """Called once per scheduler pass, after Trio's I/O wait."""
        self.passes += 1
        if not self.strict:  # (strict: the deadline stays at minus infinity, no task defers)
            self.deadline = perf_counter() + self.seconds
            self.deferred_task = None  # a new pass: every task's step is a new one

    def exhausted(self) -> bool:
        """The current task must yield at its next call that does not wait."""
        return perf_counter() >= self.deadline

    def send_may_defer(self, task: object) -> bool:
        """A send past the budget that did not wait, by ``task``: whether it
        may leave its schedule point to the task's next call (its first in
        this step of the task; never in strict mode).  A task runs at most one
        step per pass, and :meth:`new_pass` forgets the task, so the task
        names the step."""
        if self.strict or self.deferred_task is task:
            return False
        self.deferred_task = task
        return True
