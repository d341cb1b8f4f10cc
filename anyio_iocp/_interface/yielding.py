"""A schedule point that is not a cancel point, without the object Trio makes
for it.

What it replaces
----------------
``trio.lowlevel.cancel_shielded_checkpoint()`` is the package's schedule
point: a stream call that did not wait yields there when its budget runs out,
and a receive yields there once before it parks (the look of
``_flow/yield_first.py``).  On a busy echo server that is about one yield per
message.  The yield sends Trio's run loop the message
``CancelShieldedCheckpoint``, and the loop answers it with
``runner.reschedule(task)``, which wraps the task's next value in a new
``outcome.Value(None)``: an attrs ``__init__``, one more object for the
cycle collector to track, and the ``unwrap()`` that marks it used.

What this module does instead
-----------------------------
:func:`shielded_yield` reschedules the current task itself, with
:data:`~anyio_iocp._interface.parking.WOKEN` (the package's reusable
outcome, sent by the package's waker ``parking.wake_task``), and then
yields Trio's "wait until rescheduled" trap with an abort that always
refuses (``Abort.FAILED``), one trap made once.  The task is in
the run queue before it yields, as it is right after a
``CancelShieldedCheckpoint``, so it runs in the next pass, as before.
Measured with callgrind (two tasks yielding in turn on the iocp backend), a
yield costs about 3.7K user-space instructions less (docs/performance.md,
sixteenth pass).

The traps
---------
* **Cancellation.**  The run loop answers the trap by storing its abort
  function and trying to deliver a pending cancel (or a KeyboardInterrupt to
  the main task) through it.  The abort refuses, so nothing is delivered and
  the task is not touched (it is already queued): the yield stays
  cancel-shielded, and the Cancelled comes at the task's next cancel point,
  as with Trio's own yield.  Trio clears an abort function once it has been
  tried; one that was not tried stays set while the task runs on, until its
  next wait sets its own.  A cancel delivered meanwhile calls it once, and it
  refuses: the same as a running task's absent abort function.
* **KeyboardInterrupt between the two steps.**  A task rescheduled but not
  yet yielded must not be interrupted: Trio would later resume it with the
  stale outcome, in the middle of whatever it did next.  The function is
  KI-protected (Trio's ``enable_ki_protection`` marks the code object and
  costs nothing per call), so the signal is deferred, as it is in Trio's own
  ``reschedule``.
* **Counters and instruments.**  Trio counts this yield as a cancel point
  as well as a schedule point (``task._cancel_points``), so
  ``trio.testing.assert_checkpoints`` takes a block whose only yield is this
  one for a checkpoint, where Trio's yield fails it: a test of the package
  cannot use it to find a missing cancel point (every stream call makes one
  with ``checkpoint_if_cancelled`` first; the package's tests cancel scopes
  instead).  An instrument's ``task_scheduled`` runs inside the task's step
  and its context variables, before the task yields, where Trio's yield
  calls it from the run loop once the task has yielded.
* **Private names.**  The run context and the trap are Trio's internals,
  reached through :mod:`anyio_iocp._internals.trio_traps` only where Trio is
  the release this was written for.  Otherwise, and with
  ``$ANYIO_IOCP_TRAPS=public`` (a switch to compare the two),
  :data:`shielded_yield` is Trio's public ``cancel_shielded_checkpoint``.
* **A forgotten await.**  :data:`shielded_yield` is a generator, not a
  coroutine: a call without ``await`` does nothing and gets no "never
  awaited" warning (the package awaits it at every call).
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Generator
from time import perf_counter
from typing import TYPE_CHECKING, Any

from trio import lowlevel  # (faster than trio.lowlevel: see _streams/__init__.py)

from anyio_iocp._interface.parking import refuse_abort, wake_task
from anyio_iocp._internals.trio_traps import trap_maker

if TYPE_CHECKING:
    from anyio_iocp._interface.budget import ScheduleBudget


def _own_yield() -> Callable[[], Awaitable[None]] | None:
    """The package's yield, or None where Trio's internals are not the ones it
    was written for."""
    found = trap_maker()
    if found is None:
        return None
    context, make_trap = found
    trap = make_trap(refuse_abort)  # (the task is already queued)

    @lowlevel.enable_ki_protection
    @types.coroutine
    def shielded_yield() -> Generator[Any, Any, None]:
        wake_task(context.task)
        (yield trap).unwrap()

    return shielded_yield


def choose() -> Callable[[], Awaitable[None]]:
    """The yield to use: the package's own (see the notes above), or Trio's
    ``cancel_shielded_checkpoint`` where that cannot be used or is asked for."""
    own = _own_yield()
    return own if own is not None else lowlevel.cancel_shielded_checkpoint


#: a schedule point that is not a cancel point (see the notes above)
shielded_yield: Callable[[], Awaitable[None]] = choose()


async def schedule_point_on_budget(budget: ScheduleBudget, passes: int) -> None:
    """After a call that completed or failed: a schedule point if it did not
    wait (the budget's pass count is still ``passes``) and the budget has run
    out (every time in strict mode), as for a stream call.  Shielded: the
    call's result or error must not be replaced by a Cancelled."""
    if budget.passes == passes and perf_counter() >= budget.deadline:
        await shielded_yield()
