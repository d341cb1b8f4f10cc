"""A receive right after its stream's own send (``_flow/look_after_send.py``).

The run keeps one record of whether such a receive's first look at the socket
finds bytes.  While it does, the receive looks first as any receive does;
once looks find nothing, the receive skips that look (it yields first and
looks then, or waits), and looks now and then to notice a change.  Skipping
the look must change nothing the task sees: every byte, in order.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream
from helpers import arrived, open_pair, recv_exactly, steps_of_this_task

from anyio_iocp import TuningAttribute
from anyio_iocp._face.runstate import current_engine
from anyio_iocp._flow.look_after_send import (
    HIT_CREDIT,
    MAX_CREDIT,
    PROBE_EVERY,
    START_CREDIT,
    LooksAfterSends,
)
from anyio_iocp._interface.budget import SCHEDULES, ScheduleBudget


def test_the_runs_record() -> None:
    looks = LooksAfterSends()
    assert looks.credit == START_CREDIT > 0
    assert looks.look()  # a new run looks
    looks.found(False)
    assert looks.credit == 0
    # at zero credit: skipped, except every PROBE_EVERY-th receive
    answers = [looks.look() for _ in range(3 * PROBE_EVERY)]
    assert answers == ([False] * (PROBE_EVERY - 1) + [True]) * 3
    looks.found(False)  # a probe that finds nothing keeps the credit at zero
    assert looks.credit == 0
    assert not looks.look()
    looks.found(True)  # one that finds bytes: looks from now on
    assert looks.credit == HIT_CREDIT
    assert looks.look() and looks.look()
    looks.found(False)
    assert looks.look()  # one miss does not cancel a hit
    for _ in range(10):
        looks.found(True)
    assert looks.credit == MAX_CREDIT
    for _ in range(MAX_CREDIT):
        looks.found(False)
    assert looks.credit == 0 and not looks.look()


@pytest.mark.anyio
@pytest.mark.parametrize("schedule", SCHEDULES)
async def test_a_receive_right_after_a_send_looks_first_as_the_record_says(
    anyio_backend: Any, schedule: str
) -> None:
    """The peer's bytes are there before the server answers.  With credit,
    the receive right after the answer finds them without a schedule point,
    and the record earns credit; at zero credit it skips that look and takes
    them one schedule point later, the record untouched; either way every
    byte comes, in order.  In strict mode the send yields, so the receive
    after it is not "right after" and looks first."""
    engine: Any = current_engine()  # (every engine keeps a LooksAfterSends)
    # (a long budget: no schedule point for the clock in this test)
    engine.budget = ScheduleBudget(schedule, 5.0)
    looks = engine.looks
    listener, client, server = await open_pair()
    async with listener, client, server:
        await anyio.sleep(0)  # a new pass: the budget above counts from here
        await client.send(b"first")
        await arrived(server, 5)
        looks.credit, looks.skipped = 1, 0
        with steps_of_this_task() as steps:
            before = steps()
            await server.send(b"answer 1")
            assert await server.receive() == b"first"
            with_credit = steps() - before
        if engine.budget.strict:
            assert with_credit == 2  # the send's and the receive's
            assert (looks.credit, looks.skipped) == (1, 0), "strict mode used the record"
            return
        assert with_credit == 0
        assert looks.credit == 1 + HIT_CREDIT

        await client.send(b"second")
        await client.send(b" and third")
        await arrived(server, 16)
        looks.credit = 0
        with steps_of_this_task() as steps:
            before = steps()
            await server.send(b"answer 2")
            received = await server.receive()
            skipped = steps() - before
        assert skipped == 1, "the look was not skipped"
        assert (looks.credit, looks.skipped) == (0, 1)
        while len(received) < 16:
            received += await server.receive()
        assert received == b"second and third"
        assert await recv_exactly(client, 16) == b"answer 1answer 2"


@pytest.mark.anyio
@pytest.mark.parametrize("schedule", SCHEDULES)
async def test_a_look_right_after_a_send_that_finds_nothing_costs_the_run_credit(
    anyio_backend: Any, schedule: str
) -> None:
    engine: Any = current_engine()  # (every engine keeps a LooksAfterSends)
    engine.budget = ScheduleBudget(schedule)
    looks = engine.looks
    listener, client, server = await open_pair()
    async with listener, client, server, anyio.create_task_group() as tg:

        async def answer_later() -> None:
            assert await client.receive() == b"question"
            await anyio.sleep(0.05)
            await client.send(b"reply")

        tg.start_soon(answer_later)
        await anyio.sleep(0)
        looks.credit, looks.skipped = 2, 0
        await server.send(b"question")
        assert await server.receive() == b"reply"
        # strict: the send yielded, and the receive's look is not "right after"
        assert looks.credit == (2 if engine.budget.strict else 1)


@pytest.mark.anyio
async def test_a_receive_in_a_later_pass_than_the_send_looks_and_leaves_the_record() -> None:
    engine: Any = current_engine()  # (every engine keeps a LooksAfterSends)
    looks = engine.looks
    listener, client, server = await open_pair()
    async with listener, client, server:
        await server.send(b"question")
        assert await client.receive() == b"question"
        await client.send(b"reply")
        await arrived(server, 5)
        await anyio.sleep(0)  # a later pass than the send's
        looks.credit, looks.skipped = 0, 0
        assert await server.receive() == b"reply"
        assert (looks.credit, looks.skipped) == (0, 0)


async def skipping_pair() -> tuple[Any, Any, SocketStream, SocketStream]:
    """The engine's record at zero credit (budget mode), and a connected
    pair: (record, listener, client, server)."""
    engine: Any = current_engine()  # (every engine keeps a LooksAfterSends)
    engine.budget = ScheduleBudget("budget", 5.0)
    listener, client, server = await open_pair()
    await anyio.sleep(0)  # a new pass: the budget above counts from here
    engine.looks.credit, engine.looks.skipped = 0, 0
    return engine.looks, listener, client, server


@pytest.mark.anyio
async def test_a_skipped_look_still_sees_the_end_of_the_stream() -> None:
    looks, listener, client, server = await skipping_pair()
    async with listener, client, server:
        await client.send(b"last")
        await client.send_eof()
        await arrived(server, 4)
        await server.send(b"answer")
        assert await recv_exactly(server, 4) == b"last"
        await anyio.sleep(0.05)  # (the end of stream is there)
        await server.send(b"answer")
        with pytest.raises(anyio.EndOfStream):
            await server.receive()
        assert looks.skipped == 2
        assert await recv_exactly(client, 12) == b"answeranswer"


@pytest.mark.anyio
async def test_a_receive_cancelled_after_a_skipped_look_loses_nothing() -> None:
    looks, listener, client, server = await skipping_pair()
    async with listener, client, server:
        await server.send(b"question")
        with anyio.move_on_after(0.05) as scope:
            await server.receive()
        assert scope.cancelled_caught
        assert looks.skipped == 1
        await client.send(b"late reply")
        assert await recv_exactly(server, 10) == b"late reply"


@pytest.mark.anyio
async def test_at_zero_credit_one_receive_in_probe_every_looks_and_earns_credit() -> None:
    looks, listener, client, server = await skipping_pair()
    async with listener, client, server:
        await client.send(b"there")
        await arrived(server, 5)
        looks.skipped = PROBE_EVERY - 1  # the next one is the probe
        with steps_of_this_task() as steps:
            before = steps()
            await server.send(b"answer")
            assert await server.receive() == b"there"
            taken = steps() - before
        assert taken == 0, "the probe did not look"
        assert (looks.credit, looks.skipped) == (HIT_CREDIT, 0)


@pytest.mark.anyio
async def test_a_send_within_a_larger_sendcap_counts_as_right_before() -> None:
    """With ``sendcap`` above 1, a send that goes out at once is stamped the
    same way (the readiness engine's write-behind path, the send chain's)."""
    looks, listener, client, server = await skipping_pair()
    async with listener, client, server:
        server.extra(TuningAttribute.configure)(sendcap=2)
        await client.send(b"there")
        await arrived(server, 5)
        await server.send(b"answer")
        assert await server.receive() == b"there"
        assert looks.skipped == 1


@pytest.mark.anyio
@pytest.mark.parametrize("schedule", SCHEDULES)
async def test_after_a_send_that_waited_the_receive_looks_first(
    anyio_backend: Any, schedule: str
) -> None:
    """A send that had to wait for room ends in a later pass than the one it
    handed its first bytes over in: the receive after it looks as any other
    (in strict mode too, where the stream layer adds no yield after a call
    that waited)."""
    engine: Any = current_engine()  # (every engine keeps a LooksAfterSends)
    engine.budget = ScheduleBudget(schedule)
    looks = engine.looks
    size = 32 << 20  # more than the socket buffers of both ends hold
    listener, client, server = await open_pair()
    async with listener, client, server, anyio.create_task_group() as tg:

        async def drain_then_reply() -> None:
            assert len(await recv_exactly(client, size)) == size
            await client.send(b"reply")

        tg.start_soon(drain_then_reply)
        looks.credit, looks.skipped = 0, 0
        passes = engine.budget.passes
        await server.send(b"x" * size)
        assert engine.budget.passes != passes, "the send did not wait"
        assert await server.receive() == b"reply"
        assert (looks.credit, looks.skipped) == (0, 0), "the receive used the record"
