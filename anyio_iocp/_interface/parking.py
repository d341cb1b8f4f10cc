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
waiting for its completion; a stream's receiver and its reader), and a
waker on a hot path may do what :meth:`Parked.wake` does inline.

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

Every waker of the package (:meth:`Parked.wake`, :func:`wake_all`, an
operation's completion, a multishot receive's bytes, the schedule point of
:mod:`~anyio_iocp._interface.yielding`) goes through :data:`wake_task`.
Where Trio is the release this was written for, that is one function that
does what Trio's ``Runner.reschedule`` does
(:func:`~anyio_iocp._internals.trio_traps.task_waker`), without the public
wrapper and the instruments' ``__contains__`` written in Python: about 1.1K
user-space instructions less per wake-up (``bench/wake_cost.sh``;
docs/performance.md, seventeenth pass).  Elsewhere, and with
``$ANYIO_IOCP_TRAPS=public``, it is Trio's public ``reschedule``.

What a wait yields
------------------
Trio's public way (:meth:`Parked.wait`) makes five objects per wait: the
caller's coroutine, a closure for the abort (and its cell), the coroutine of
``wait_task_rescheduled``, the generator it yields through, and the trap it
yields to the run loop (``WaitTaskRescheduled(abort)``, an attrs object).
The run loop reads only the trap's ``abort_func``, so one trap may be
yielded any number of times.  A :class:`Spot` (a :class:`Parked` waited on
many times: a stream's multishot receiver, a listener's waiting accept, the
idletimeout gate) makes its trap at its first wait and keeps it (``trap``),
with an abort that reaches the spot through a weak reference
(:class:`_ForgetOnAbort`: spot, trap and abort make no reference cycle), and
each wait is one generator that stores the task and yields the trap
(``bench/wake_cost.sh``: docs/performance.md, sixteenth pass, has what it
saves).  The trap and its abort cost a spot about 270 bytes once it has
waited (one per connection).  ``Spot.wait`` is not a coroutine: a
forgotten ``await`` runs nothing and gets no "never awaited" warning, and a
task cannot be started on it.  The generator is protected from
KeyboardInterrupt (Trio's ``enable_ki_protection``, free per call), so a
spot never names a task that did not park.  Trio's trap class and its run
context are private: :mod:`anyio_iocp._internals.trio_traps` hands them
over only where Trio is the release this was written for; elsewhere a wait
is Trio's public ``wait_task_rescheduled`` with the same abort (also with
``$ANYIO_IOCP_TRAPS=public``, to compare).  Operations
(:class:`~anyio_iocp._interface.completion.CompletionOp`), made one per
system call, are plain :class:`Parked`: they carry no trap.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from typing import Any, TypeVar

from outcome import Outcome
from trio import lowlevel  # (faster than trio.lowlevel: see _streams/__init__.py)
from trio.lowlevel import Abort, Task

from anyio_iocp._internals.trio_traps import task_waker, trap_maker

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


def _public_wake(task: Task) -> None:
    lowlevel.reschedule(task, WOKEN)


#: reschedule a parked task with :data:`WOKEN`: Trio's ``Runner.reschedule``
#: in one call where :func:`~anyio_iocp._internals.trio_traps.task_waker`
#: vouches for the release, Trio's public ``reschedule`` otherwise
wake_task: Callable[[Task], None] = task_waker(WOKEN) or _public_wake


def refuse_abort(_raise_cancel: Callable[[], object]) -> Abort:
    """An abort that refuses: the task stays parked (or queued) and raises for
    itself when it runs again."""
    return Abort.FAILED


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
            wake_task(task)


class Spot(Parked):
    """A :class:`Parked` waited on many times (a stream's receiver, a
    listener's accept): it makes its trap once (see "What a wait yields")."""

    __slots__ = ("__weakref__", "trap")

    def __init__(self) -> None:
        super().__init__()
        #: what its waits yield, made at the first (see the notes above)
        self.trap: object = None

    def wait(self) -> Awaitable[None]:  # type: ignore[override]
        """Park the current task until :meth:`wake`.  Cancellable: a cancelled
        task is forgotten, and nothing else changes.  Not a coroutine: await
        it (a task cannot be started on it)."""
        trap = self.trap
        if trap is None:
            trap = self.trap = _make_trap(_ForgetOnAbort(self))
        return _park(self, trap)


class _ForgetOnAbort:
    """The abort function of one :class:`Spot`'s trap: a cancelled task is
    forgotten there.  It reaches the spot through a weak reference, so that
    the spot, its trap and this make no reference cycle (a stream's objects
    are freed by their reference counts when it is dropped)."""

    __slots__ = ("spot",)

    def __init__(self, spot: Spot) -> None:
        self.spot = weakref.ref(spot)

    def __call__(self, _raise_cancel: Callable[[], object]) -> Abort:
        spot = self.spot()
        if spot is not None:  # (always: the parked task's frame holds it)
            spot.task = None
        return Abort.SUCCEEDED


def _build_park() -> tuple[
    Callable[[_ForgetOnAbort], object], Callable[[Spot, object], Awaitable[None]]
]:
    """``(make_trap, park)``: Trio's trap made once per spot and a park that
    yields it, or, where Trio's internals are not the ones this was written
    for (or ``$ANYIO_IOCP_TRAPS=public``), a park that is :meth:`Parked.wait`
    (Trio's public ``wait_task_rescheduled``; the "trap" is then unused)."""
    found = trap_maker()
    if found is None:

        async def public_park(spot: Spot, _trap: object) -> None:
            await Parked.wait(spot)

        return (lambda abort: abort), public_park
    context, make_trap = found

    @lowlevel.enable_ki_protection
    @types.coroutine
    def park(spot: Spot, trap: object) -> Generator[object, Any, None]:
        # protected from KeyboardInterrupt between the two steps, so that a
        # spot never names a task that did not park
        spot.task = context.task
        (yield trap).unwrap()

    return make_trap, park


_make_trap, _park = _build_park()


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
        wake_task(task)
    tasks.clear()
