"""The completion-operation base and the waiting policy both completion
engines share (``_interface/completion.py``, ``_interface/parking.py``), on a
fake engine whose "kernel" completes operations when the test says so.

Each test checks an ordering that a careless implementation gets wrong:
Cancelled must not propagate from ``wait_or_cancel`` before the completion has
arrived, ``drain`` must not return while any operation is still posted, a
receive's plain ``wait`` must not cancel the operation, and a cancelled
parked task must be forgotten.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio.lowlevel import Task

from anyio_iocp._interface import completion, parking
from anyio_iocp._interface.completion import CompletionOp, CompletionWaits
from anyio_iocp._interface.parking import WOKEN, Parked, park_among, wake_all

CANCELLED = -125


class FakeOp(CompletionOp):
    __slots__ = ("result",)

    def __init__(self, keep: object = None) -> None:
        super().__init__(keep)
        self.result = 0

    @property
    def cancelled(self) -> bool:
        return self.result == CANCELLED

    def complete(self, result: int) -> None:
        self.result = result
        self.done = True
        self.wake()


class FakeEngine(CompletionWaits[FakeOp]):
    def __init__(self) -> None:
        self.closed = False
        self.cancel_requests: list[FakeOp] = []

    def request_cancel(self, op: FakeOp) -> None:
        if not op.done:
            self.cancel_requests.append(op)


def test_wait_or_cancel_waits_for_the_completion_then_raises() -> None:
    async def main() -> None:
        engine = FakeEngine()
        op = FakeOp(keep=bytearray(8))
        outcome: list[str] = []
        scope = trio.CancelScope()

        async def waiter() -> None:
            with scope:
                try:
                    await engine.wait_or_cancel(op)
                except trio.Cancelled:
                    outcome.append(f"cancelled, done={op.done}")
                    raise
                outcome.append("returned")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            # cancelled, and still waiting: the kernel has the op
            assert outcome == []
            assert engine.cancel_requests == [op]
            assert op.task is not None and op.keep is not None
            op.complete(CANCELLED)
        assert outcome == ["cancelled, done=True"]

    trio.run(main)


def test_wait_or_cancel_keeps_an_operation_that_happened_after_all() -> None:
    async def main() -> None:
        engine = FakeEngine()
        op = FakeOp()
        outcome: list[str] = []
        scope = trio.CancelScope()

        async def waiter() -> None:
            with scope:
                await engine.wait_or_cancel(op)
                outcome.append("returned")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            op.complete(64)  # the send went out before the cancel reached it
        assert outcome == ["returned"]
        assert engine.cancel_requests == [op]

    trio.run(main)


def test_wait_cancelled_leaves_the_operation_posted() -> None:
    async def main() -> None:
        engine = FakeEngine()
        op = FakeOp()
        with trio.move_on_after(0.01) as scope:
            await engine.wait(op)
        assert scope.cancelled_caught
        assert engine.cancel_requests == []  # a receive stays posted
        assert op.task is None  # and its completion wakes nobody
        op.complete(5)
        assert op.done and op.result == 5

    trio.run(main)


def test_wait_returns_when_the_completion_arrives() -> None:
    async def main() -> None:
        engine = FakeEngine()
        op = FakeOp()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(engine.wait, op)
            await trio.testing.wait_all_tasks_blocked()
            assert op.task is not None
            op.complete(3)
        assert op.task is None

    trio.run(main)


def test_drain_returns_only_when_every_operation_completed() -> None:
    async def main() -> None:
        engine = FakeEngine()
        ops = [FakeOp(), FakeOp(), FakeOp()]
        ops[1].complete(7)  # already done: nothing to cancel or wait for
        drained: list[bool] = []
        scopes = [trio.CancelScope(), trio.CancelScope()]

        async def drainer(scope: trio.CancelScope) -> None:
            with scope:
                await engine.drain(ops)
                drained.append(True)

        async with trio.open_nursery() as nursery:
            for scope in scopes:  # two tasks closing at once
                nursery.start_soon(drainer, scope)
            await trio.testing.wait_all_tasks_blocked()
            assert engine.cancel_requests == [ops[0], ops[2]] * 2
            ops[2].complete(CANCELLED)  # out of order
            await trio.testing.wait_all_tasks_blocked()
            assert drained == []
            for scope in scopes:
                scope.cancel()  # drain is not cancellable
            await trio.testing.wait_all_tasks_blocked()
            assert drained == []
            ops[0].complete(CANCELLED)
        assert drained == [True, True]

    trio.run(main)


def test_drain_gives_up_once_the_engine_closed() -> None:
    async def main() -> None:
        engine = FakeEngine()
        op = FakeOp()
        engine.closed = True  # its completions can no longer arrive
        with trio.fail_after(1):
            await engine.drain([op])
        assert not op.done

    trio.run(main)


def test_cancel_at_end_forgets_waiters_and_cancels() -> None:
    async def main() -> None:
        engine = FakeEngine()
        op, done = FakeOp(), FakeOp()
        done.complete(1)
        op.task = trio.lowlevel.current_task()
        op.drainers = [trio.lowlevel.current_task()]
        engine.cancel_at_end([op, done])
        assert op.task is None and op.drainers is None
        assert engine.cancel_requests == [op]

    trio.run(main)


def test_a_drain_under_way_survives_the_end_of_the_run_inside_it() -> None:
    """IOCP drains at the end of the run inside it, where a system task may be
    draining an op (closing a stream the program dropped): cancel_at_end with
    ``in_run`` keeps that drainer, so the completion wakes it; and when no
    completion comes, release_drainers wakes it once the engine has closed.
    (Forgotten, it would wait forever and the run would never end.)"""

    async def main() -> None:
        engine = FakeEngine()
        completes, never = FakeOp(), FakeOp()
        drained: list[str] = []
        tasks: list[Task] = []

        async def drainer(op: FakeOp, name: str) -> None:
            tasks.append(trio.lowlevel.current_task())
            with trio.CancelScope(shield=True):
                await engine.drain([op])
            drained.append(name)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drainer, completes, "completed")
            nursery.start_soon(drainer, never, "released")
            await trio.testing.wait_all_tasks_blocked()
            engine.cancel_at_end([completes, never], in_run=True)
            completes.complete(CANCELLED)
            await trio.testing.wait_all_tasks_blocked()
            woken_by_completion = list(drained)
            engine.closed = True
            engine.release_drainers([never])
            await trio.testing.wait_all_tasks_blocked()
            woken_at_close = list(drained)
            # a drainer nobody woke would wait forever: wake it here, so that
            # the test ends (and fails on the assertions below)
            for task, name in zip(tasks, ("completed", "released"), strict=True):
                if name not in drained:
                    trio.lowlevel.reschedule(task)
        assert woken_by_completion == ["completed"]
        assert woken_at_close == ["completed", "released"]
        assert not never.done

    trio.run(main)


def test_parked_wake_and_cancel() -> None:
    async def main() -> None:
        spot = Parked()
        woken: list[bool] = []

        async def parked() -> None:
            await spot.wait()
            woken.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(parked)
            await trio.testing.wait_all_tasks_blocked()
            spot.wake()
        assert woken == [True] and spot.task is None
        spot.wake()  # nobody parked: nothing happens
        with trio.move_on_after(0.01):
            await spot.wait()
        assert spot.task is None  # a cancelled task is forgotten

    trio.run(main)


def test_park_among_wakes_all_and_forgets_the_cancelled() -> None:
    async def main() -> None:
        tasks: list[Task] = []
        woken: list[int] = []

        scope = trio.CancelScope()

        async def parked(n: int) -> None:
            await park_among(tasks)
            woken.append(n)

        async def cancelled() -> None:
            with scope:
                await park_among(tasks)
            woken.append(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancelled)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(parked, 1)
            nursery.start_soon(parked, 2)
            await trio.testing.wait_all_tasks_blocked()
            assert len(tasks) == 3
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert len(tasks) == 2 and woken == [0]  # the cancelled task left the list
            wake_all(tasks)
            assert tasks == []
        assert woken[0] == 0 and sorted(woken[1:]) == [1, 2]

    trio.run(main)


def test_woken_tasks_share_one_outcome_that_unwraps_every_time() -> None:
    # Every waker sends the same WOKEN: a second wake-up (of the same task,
    # or of another) must unwrap it again, where an outcome.Value refuses.
    assert WOKEN.unwrap() is None and WOKEN.unwrap() is None

    async def main() -> None:
        ping, pong = Parked(), Parked()
        rounds: list[int] = []

        async def ponger() -> None:
            for n in range(3):
                await pong.wait()
                rounds.append(n)
                ping.wake()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ponger)
            for _ in range(3):
                await trio.testing.wait_all_tasks_blocked()
                pong.wake()
                await ping.wait()
        assert rounds == [0, 1, 2]

    trio.run(main)


def test_every_waker_sends_woken(monkeypatch: pytest.MonkeyPatch) -> None:
    # WOKEN saves an outcome per wake-up only if the wakers send it: every
    # wake the package makes here must (the tasks still wake either way).
    # What the woken task will be sent is read off it right after the wake.
    sent: list[object] = []
    real = parking.wake_task

    def recording(task: Task) -> None:
        real(task)
        sent.append(task._next_send)

    monkeypatch.setattr(parking, "wake_task", recording)
    monkeypatch.setattr(completion, "wake_task", recording)

    async def main() -> None:
        engine = FakeEngine()
        spot = Parked()
        tasks: list[Task] = []
        waited, drained, closed = FakeOp(), FakeOp(), FakeOp()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(spot.wait)
            nursery.start_soon(park_among, tasks)
            nursery.start_soon(engine.wait, waited)
            nursery.start_soon(engine.drain, [drained])
            nursery.start_soon(engine.drain, [closed])
            await trio.testing.wait_all_tasks_blocked()
            spot.wake()  # Parked.wake
            wake_all(tasks)
            waited.complete(1)  # CompletionOp.wake: the waiting task
            drained.complete(CANCELLED)  # ...and a drainer
            engine.closed = True  # the end of a run: its drainer gives up
            engine.release_drainers([closed])
        assert len(sent) == 5

    trio.run(main)
    assert all(outcome is WOKEN for outcome in sent), sent
