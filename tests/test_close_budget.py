"""A stream's ``aclose()`` on the budget (``anyio_iocp._streams.sockets``), on
every engine.

The close happens in any case, also in a cancelled scope, which the call then
reports (a cancel point after the close, as in Trio).  A close that did not
wait yields only once the run's budget has run out, every time in strict
mode.
"""

from __future__ import annotations

import socket
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from helpers import BUDGET_CASES, first_listener, peer_closed, steps_of_this_task

from anyio_iocp._face.runstate import current_engine
from anyio_iocp._interface.budget import ScheduleBudget

pytestmark = pytest.mark.anyio

#: streams closed in a row
STREAMS = 16


async def accepted_streams(count: int) -> tuple[Any, list[socket.socket], list[SocketStream]]:
    """A listener, ``count`` plain client sockets connected to it, and the
    streams the listener accepted for them (in the same order)."""
    multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
    listener = first_listener(multi)
    port = listener.extra(SocketAttribute.local_port)
    clients: list[socket.socket] = []
    streams: list[SocketStream] = []
    for _ in range(count):
        clients.append(socket.create_connection(("127.0.0.1", port)))
        with anyio.fail_after(5):
            streams.append(await listener.accept())
    return multi, clients, streams


@pytest.mark.parametrize("budget", BUDGET_CASES)
async def test_closes_yield_on_the_budget(anyio_backend: Any, budget: str) -> None:
    """Closing streams with nothing in flight: no schedule point while the
    budget lasts; one per close once it has run out, and in strict mode.
    Each stream is closed (its peer sees it)."""
    schedule, seconds, every_call = BUDGET_CASES[budget]
    expected = STREAMS if every_call else 0
    multi, clients, streams = await accepted_streams(STREAMS)
    current_engine().budget = budget_in_use = ScheduleBudget(schedule, seconds)
    for stream in streams:  # (the streams read the run's budget when made)
        stream._budget = budget_in_use  # type: ignore[attr-defined]
    await anyio.sleep(0)  # a pass of the new budget has begun (its clock runs)
    try:
        with steps_of_this_task() as steps:
            before = steps()
            for stream in streams:
                await stream.aclose()
            yielded = steps() - before
        for client in clients:
            assert await anyio.to_thread.run_sync(peer_closed, client)
    finally:
        for client in clients:
            client.close()
        await multi.aclose()
    assert yielded == expected


@pytest.mark.parametrize("budget", ["long-budget", "strict"])
async def test_a_close_in_a_cancelled_scope_closes_and_reports_the_cancel(
    anyio_backend: Any, budget: str
) -> None:
    """As in Trio: ``aclose()`` in a cancelled scope closes the stream, then
    raises Cancelled (caught by the scope), also when the budget would not
    make it yield."""
    schedule, seconds, _ = BUDGET_CASES[budget]
    multi, clients, streams = await accepted_streams(1)
    current_engine().budget = streams[0]._budget = ScheduleBudget(schedule, seconds)  # type: ignore[attr-defined]
    try:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await streams[0].aclose()
            pytest.fail("aclose() in a cancelled scope returned")
        assert scope.cancelled_caught
        assert await anyio.to_thread.run_sync(peer_closed, clients[0])
        with pytest.raises(anyio.ClosedResourceError):
            await streams[0].receive()
    finally:
        clients[0].close()
        await multi.aclose()


@pytest.mark.parametrize("budget", ["spent-budget", "strict"])
async def test_a_close_that_waited_yields_no_second_time(anyio_backend: Any, budget: str) -> None:
    """A close that waits (for a receive in flight in another task, which it
    ends) went through the scheduler by waiting, and adds no schedule point
    after it, even with a budget that has run out."""
    schedule, seconds, _ = BUDGET_CASES[budget]
    multi, clients, streams = await accepted_streams(1)
    current_engine().budget = streams[0]._budget = ScheduleBudget(schedule, seconds)  # type: ignore[attr-defined]
    ended: list[BaseException] = []

    async def receiver() -> None:
        try:
            await streams[0].receive()
        except anyio.ClosedResourceError as exc:
            ended.append(exc)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver)
            await anyio.wait_all_tasks_blocked()  # the receive waits
            with steps_of_this_task() as steps:
                before = steps()
                await streams[0].aclose()
                yielded = steps() - before
        assert len(ended) == 1, "the receive in flight ends with ClosedResourceError"
        assert await anyio.to_thread.run_sync(peer_closed, clients[0])
    finally:
        clients[0].close()
        await multi.aclose()
    assert yielded == 1
