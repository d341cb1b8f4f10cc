"""A receive right after its stream's own send (``_flow/look_after_send.py``).

The run keeps one record of whether such a receive's first look at the socket
finds bytes.  While it does, the receive looks first as any receive does;
once looks find nothing, the receive skips that look (it yields first and
looks then, or waits), and looks now and then to notice a change.  Skipping
the look must change nothing the task sees: every byte, in order.
"""

from __future__ import annotations

import select
import socket
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from helpers import open_pair, steps_of_this_task

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


async def arrived(stream: SocketStream, size: int) -> None:
    """Until ``size`` bytes wait in ``stream``'s socket (nothing taken)."""
    raw: socket.socket = stream.extra(SocketAttribute.raw_socket)
    with anyio.fail_after(5):
        while True:
            if select.select([raw], [], [], 0)[0]:
                try:
                    if len(raw.recv(size, socket.MSG_PEEK)) >= size:
                        return
                except BlockingIOError:
                    pass
            await anyio.sleep(0.005)


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
        assert await client.receive() == b"answer 1answer 2"


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
