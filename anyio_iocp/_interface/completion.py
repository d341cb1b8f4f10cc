"""A posted completion operation, and how tasks wait for one.

Both completion engines (io_uring, IOCP) work the same way: an operation is
*posted* to the kernel before the event it waits for has happened, the kernel
does it when it can, and later delivers a *completion* that says what got
done.  What differs is the primitive underneath: how a completion arrives
(a completion queue entry, a packet on a port) and how the kernel is asked to
cancel one operation (``IORING_OP_ASYNC_CANCEL``, ``CancelIoEx``).  The rest
is the same policy, written here once.

The operation
-------------
:class:`CompletionOp` is the part every posted operation has: ``done`` once
its final completion has arrived, the task waiting for it (``task``, from
:class:`~anyio_iocp._interface.parking.Parked`), the tasks draining it at a
close (``drainers``), its ``kind`` for the statistics, and ``keep``: the
memory lent to the kernel (buffers, addresses, the ``OVERLAPPED``), held until
the completion arrives, whatever happens to the task that posted it.  An
engine's operation class adds its own result fields, records the completion,
and calls :meth:`CompletionOp.wake`.

Waiting (:class:`CompletionWaits`, mixed into an engine)
--------------------------------------------------------
* :meth:`~CompletionWaits.wait`: park until the operation is done.  A
  cancelled task leaves the operation posted: a receive's bytes (an accept's
  connection) go to the next call, nothing is lost.  It does what
  :meth:`Parked.wait <anyio_iocp._interface.parking.Parked.wait>` does, on
  the operation, with no call beyond it.
* :meth:`~CompletionWaits.wait_or_cancel`: when the task is cancelled, ask the
  kernel to cancel the operation and keep waiting (the abort refuses, so the
  wait is shielded) until the completion says what happened.  Cancelled is
  raised only if the kernel did cancel it; an operation that happened after
  all (a send that went out, a connect that succeeded) keeps its result.
* :meth:`~CompletionWaits.drain`: cancel operations and wait, shielded, until
  every one has completed: a stream or listener closing, before its socket is
  closed.  It gives up only once the engine has closed (its completions can
  no longer arrive; the memory stays kept).
* :meth:`~CompletionWaits.cancel_at_end`: the end of the run, when no task is
  left to wake: forget the waiters and ask the kernel to cancel everything;
  the engine then collects the completions its own way.  An engine that
  drains inside the run (IOCP) keeps the drainers: a system task closing a
  stream the program dropped may be one, and must be woken, by the
  completion or, if none comes in time, by
  :meth:`~CompletionWaits.release_drainers`.
* :meth:`~CompletionWaits.keep_uncompleted`: operations whose completion did not come
  within the end of the run's bounded wait are kept, with their memory, for
  the life of the process (the kernel may still write into it), and a
  warning says how many.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from trio import lowlevel  # (faster than trio.lowlevel: see _streams/__init__.py)
from trio.lowlevel import Abort, Task

from anyio_iocp._interface.parking import Parked, refuse_abort, wake_task

_log = logging.getLogger("anyio_iocp")


class CompletionOp(Parked):
    """One posted operation.  ``keep`` holds the memory the kernel may touch.

    Engine operations created once per message set these fields in their own
    ``__init__`` rather than calling this one: one call per operation.
    """

    __slots__ = ("done", "drainers", "keep", "kind")

    def __init__(self, keep: object = None) -> None:
        self.task = None
        self.keep = keep
        #: what it is, for the statistics
        self.kind: object = ""
        #: its final completion has arrived
        self.done = False
        #: tasks draining it (a close), woken with the waiting task
        self.drainers: list[Task] | None = None

    @property
    def cancelled(self) -> bool:
        """The kernel cancelled it (meaningful once ``done``)."""
        raise NotImplementedError

    def wake(self) -> None:
        """The final completion has arrived: wake the waiting task and the drainers."""
        task = self.task
        if task is not None:
            self.task = None
            wake_task(task)
        drainers = self.drainers
        if drainers:
            self.drainers = None
            for drainer in drainers:
                wake_task(drainer)


OpT = TypeVar("OpT", bound=CompletionOp)

#: operations that a run left without their completion: kept, with the
#: memory they lent to the kernel, for the life of the process
ABANDONED: list[CompletionOp] = []


class CompletionWaits(Generic[OpT]):
    """The waiting policy of a completion engine; the engine supplies
    :meth:`request_cancel` and ``closed``."""

    #: the engine has closed: completions no longer arrive
    closed: bool

    @abstractmethod
    def request_cancel(self, op: OpT) -> None:
        """Ask the kernel to cancel ``op``; its completion arrives either way.
        Never raises (it runs in abort functions)."""

    async def wait(self, op: OpT) -> None:
        """Park until ``op`` is done; a cancelled task leaves ``op`` posted.

        This is ``op.wait()`` (:meth:`Parked.wait`) written out: a receive
        waits here for every message, and CPython 3.11 specializes the call
        of a plain method but not of a ``staticmethod`` alias (about 45 ns
        more per call, measured)."""
        op.task = lowlevel.current_task()

        def abort(_: Callable[[], object]) -> Abort:
            op.task = None
            return Abort.SUCCEEDED

        await lowlevel.wait_task_rescheduled(abort)

    async def wait_or_cancel(self, op: OpT) -> None:
        """Wait for ``op``; if cancelled, cancel it in the kernel and wait for
        its completion, then raise Cancelled only if it did not happen."""
        op.task = lowlevel.current_task()
        raise_cancel: list[Callable[[], object]] = []

        def abort(rc: Callable[[], object]) -> Abort:
            raise_cancel.append(rc)
            self.request_cancel(op)
            return Abort.FAILED

        await lowlevel.wait_task_rescheduled(abort)
        if raise_cancel and op.cancelled:
            raise_cancel[0]()

    async def drain(self, ops: Sequence[OpT]) -> None:
        """Cancel ``ops`` and wait until every one has completed (or the
        engine has closed).  Not cancellable: call it shielded."""
        for op in ops:
            self.request_cancel(op)
        task = lowlevel.current_task()
        for op in ops:
            while not op.done and not self.closed:
                if op.drainers is None:
                    op.drainers = []
                op.drainers.append(task)
                await lowlevel.wait_task_rescheduled(refuse_abort)

    def cancel_at_end(self, ops: Iterable[OpT], in_run: bool = False) -> None:
        """End of the run: cancel every op in the kernel, forgetting the tasks
        that waited for them.  ``in_run``: the engine drains inside the run
        (IOCP's dispatcher), where a system task may still be draining an op
        (closing a stream the program dropped): such drainers stay, to be
        woken by the completion or by :meth:`release_drainers`."""
        for op in ops:
            op.task = None
            if not in_run:
                op.drainers = None
            self.request_cancel(op)

    def release_drainers(self, ops: Iterable[OpT]) -> None:
        """The engine has closed with ``ops`` still uncompleted: wake the tasks
        draining them (``drain`` gives up once the engine is closed)."""
        for op in ops:
            drainers, op.drainers = op.drainers, None
            for drainer in drainers or ():
                wake_task(drainer)

    def keep_uncompleted(self, ops: Iterable[OpT], what: str, kept: str) -> bool:
        """End of the run, after its bounded wait: keep ``ops`` (not completed)
        and their memory for good, with a warning that names the operations
        (``what``) and what is ``kept``.  Returns whether any was left."""
        left = list(ops)
        if not left:
            return False
        ABANDONED.extend(left)
        _log.warning("%d operations did not complete at the end of the run; %s", len(left), kept)
        return True
