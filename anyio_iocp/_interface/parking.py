"""Parking a task until something happens, with an abort that forgets it.

Trio parks a task with ``lowlevel.wait_task_rescheduled(abort)``: the
task sleeps until someone calls ``lowlevel.reschedule(task)``.  If it is
cancelled while it sleeps, Trio calls ``abort``, and ``Abort.SUCCEEDED`` lets
the Cancelled go.  Every waiter of the engines has the same shape: the task is
remembered where its waker will look for it, and a cancelled task is
forgotten there, so that the waker never reschedules a task that has already
gone on (Trio refuses that: the task is no longer parked).

:class:`Parked` is a place for one task.  ``await spot.wait()`` parks the
current task in ``spot.task`` and ``spot.wake()`` reschedules it.  Classes
with one waiter per instance derive from it (an operation and the task
waiting for its completion; a stream's receiver and its reader): the waiting
costs no object of its own and no call beyond ``wait()`` itself, and a waker
on a hot path may do what :meth:`Parked.wake` does inline.

:func:`park_among` and :func:`wake_all` do the same for several tasks waiting
for one condition, in a list the owner keeps (a write-behind stream's sender
and a task closing it).

What a woken task is sent
-------------------------
``lowlevel.reschedule(task)`` sends the parked task ``outcome.Value(None)``,
a new object every time: an outcome may be unwrapped only once.  A task
parked here gets :data:`WOKEN` instead, one object whose ``unwrap()`` returns
None every time.  The only reader is the parked task itself
(``wait_task_rescheduled`` unwraps what it is sent; Trio only passes it on),
a task whose abort lets the Cancelled go (``Abort.SUCCEEDED``) is sent Trio's
own ``Error(Cancelled)``, and one whose abort refuses (``Abort.FAILED``: a
send waiting for its cancel's completion, a close draining) is sent
:data:`WOKEN` and raises for itself afterwards, as before.  It saves
the allocation and the attrs ``__init__`` of an outcome per wake-up: once per
received message on a stream that waits.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Generator
from typing import TypeVar

from outcome import Outcome
from trio import lowlevel  # (faster than trio.lowlevel: see _streams/__init__.py)
from trio.lowlevel import Abort, Task

_Result = TypeVar("_Result")


class _Woken(Outcome[None]):
    """The outcome None that may be unwrapped any number of times."""

    __slots__ = ()

    def unwrap(self) -> None:
        return None

    def send(self, gen: Generator[_Result, None, object]) -> _Result:
        return gen.send(None)

    async def asend(self, agen: AsyncGenerator[_Result, None]) -> _Result:
        return await agen.asend(None)


#: what a task parked by this package is sent when woken (see the notes above)
WOKEN: Outcome[None] = _Woken()


class Parked:
    """A place where one task waits until :meth:`wake`; cancelling it forgets it."""

    __slots__ = ("task",)

    def __init__(self) -> None:
        #: the parked task, None while nobody waits
        self.task: Task | None = None

    async def wait(self) -> None:
        """Park the current task until :meth:`wake`.  Cancellable: a cancelled
        task is forgotten, and nothing else changes."""
        self.task = lowlevel.current_task()

        def abort(_: Callable[[], object]) -> Abort:
            self.task = None
            return Abort.SUCCEEDED

        await lowlevel.wait_task_rescheduled(abort)

    def wake(self) -> None:
        """Reschedule the parked task, if there is one."""
        task = self.task
        if task is not None:
            self.task = None
            lowlevel.reschedule(task, WOKEN)


async def park_among(tasks: list[Task]) -> None:
    """Park the current task in ``tasks`` until :func:`wake_all` (or another
    waker that removes it) reschedules it.  Cancellable: a cancelled task
    leaves the list."""
    task = lowlevel.current_task()
    tasks.append(task)

    def abort(_: Callable[[], object]) -> Abort:
        if task in tasks:
            tasks.remove(task)
        return Abort.SUCCEEDED

    await lowlevel.wait_task_rescheduled(abort)


def wake_all(tasks: list[Task]) -> None:
    """Reschedule every task parked in ``tasks`` and empty the list."""
    for task in tasks:
        lowlevel.reschedule(task, WOKEN)
    tasks.clear()
