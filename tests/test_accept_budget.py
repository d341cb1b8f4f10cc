"""``accept()`` on the budget (``anyio_iocp._interface.budget``, "Accepts on
the budget"), on every engine.

An ``accept()`` that takes a connection already there yields only once the
run's budget has run out, every time in strict mode; one that waited yields
no second time.  Every ``accept()`` is still a cancel point, and a cancelled
one takes no connection.  With ``idletimeout`` above 0, the gate that takes
the listener's connections keeps to the same budget.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import pytest
import trio
from anyio.abc import SocketAttribute, SocketListener
from helpers import (
    BUDGET_CASES,
    StepCounter,
    first_listener,
    peer_closed,
    poll_until,
    steps_of_this_task,
)
from test_busy_listener import kernel_accept_queue

import anyio_iocp
from anyio_iocp import TuningAttribute
from anyio_iocp._face.runstate import current_engine
from anyio_iocp._interface.budget import BUDGET_SECONDS, ScheduleBudget
from anyio_iocp._streams.nodelay import AcceptedNodelay

pytestmark = pytest.mark.anyio

#: connections waiting before the accepts
WAITING = 16


@contextmanager
def waiting_clients(port: int, count: int = WAITING) -> Iterator[list[socket.socket]]:
    """``count`` connections to ``port``, each of which has sent its number."""
    clients: list[socket.socket] = []
    try:
        for number in range(count):
            clients.append(socket.create_connection(("127.0.0.1", port)))
            clients[-1].sendall(bytes([number]))
        yield clients
    finally:
        for client in clients:
            client.close()


async def all_there(listener: SocketListener, count: int = WAITING) -> None:
    """Until ``count`` connections wait where ``accept()`` takes them without
    waiting.  The completion engines' listeners have accepts posted ahead
    (backlog 128), which take every connection: until their completions are
    reaped and the connections queued (a connection that the kernel's listen
    queue still counts may be one a posted accept is about to take).  The
    readiness engine accepts from the kernel's queue: until the connections
    are there, which Linux counts; Windows has no such count, and there it
    gives the handshakes a fixed 0.3 s."""
    readiness = current_engine().info.name == "readiness"
    if readiness and sys.platform == "win32":
        await anyio.sleep(0.3)
        return
    raw = listener.extra(SocketAttribute.raw_socket)
    with anyio.fail_after(5):
        while True:
            there = listener.extra(TuningAttribute.backlog).in_use
            if readiness:
                there += kernel_accept_queue(raw)
            if there >= count:
                return
            await anyio.sleep(0.01)


async def numbers_of(streams: list[Any]) -> list[int]:
    """The number each accepted stream's client sent (the streams are closed)."""
    numbers = []
    for stream in streams:
        async with stream:
            with anyio.fail_after(5):
                numbers.append((await stream.receive(1))[0])
    return numbers


async def listener_with_budget(
    schedule: str, seconds: float, idletimeout: int = 0
) -> tuple[Any, SocketListener, int]:
    """The run's budget replaced by ``(schedule, seconds)``; then a listener
    (with ``idletimeout``), and its port."""
    current_engine().budget = ScheduleBudget(schedule, seconds)
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", idletimeout=idletimeout)
    listener = first_listener(multi)
    return multi, listener, listener.extra(SocketAttribute.local_port)


@pytest.mark.parametrize("budget", BUDGET_CASES)
async def test_accepts_of_waiting_connections_yield_on_the_budget(
    anyio_backend: Any, budget: str
) -> None:
    """Connections already there: with a budget that does not run out, the
    accepts take them all with no schedule point; with one that has run out,
    and in strict mode, each accept is one.  No connection is lost or taken
    twice."""
    schedule, seconds, every_call = BUDGET_CASES[budget]
    expected = WAITING if every_call else 0
    multi, listener, port = await listener_with_budget(schedule, seconds)
    async with multi:
        with waiting_clients(port):
            await all_there(listener)  # handshakes done, accepts posted ahead completed
            with steps_of_this_task() as steps:
                before = steps()
                streams = [await listener.accept() for _ in range(WAITING)]
                yielded = steps() - before
            assert sorted(await numbers_of(streams)) == list(range(WAITING))
    assert yielded == expected


@pytest.mark.parametrize("idletimeout", [0, 5000], ids=["direct", "gate"])
@pytest.mark.parametrize("budget", ["long-budget", "strict"])
async def test_an_accept_in_a_cancelled_scope_takes_no_connection(
    anyio_backend: Any, budget: str, idletimeout: int
) -> None:
    """A cancel point before a connection is taken, also when one is there and
    the budget would not make the call yield (and through the idle gate, once
    it runs and has the connection ready): the connection goes to the next
    ``accept()``."""
    schedule, seconds, _ = BUDGET_CASES[budget]
    multi, listener, port = await listener_with_budget(schedule, seconds, idletimeout)
    async with multi:
        with waiting_clients(port, 2):
            with anyio.fail_after(5):
                first = await listener.accept()  # (starts the gate, if any)
            await anyio.sleep(0.3)  # the second connection is there (and ready)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await listener.accept()
                pytest.fail("accept() in a cancelled scope returned")
            assert scope.cancelled_caught
            with anyio.fail_after(5):
                second = await listener.accept()
            assert sorted(await numbers_of([first, second])) == [0, 1]  # (the gate: any order)


async def test_an_accept_that_waited_yields_no_second_time(anyio_backend: Any) -> None:
    """Strict mode: an accept that waited for its connection went through
    the scheduler by waiting, and adds no schedule point after it."""
    multi, listener, port = await listener_with_budget("strict", BUDGET_SECONDS)
    accepted: list[Any] = []
    yielded: list[int] = []

    async def acceptor() -> None:
        with steps_of_this_task() as steps:
            before = steps()
            accepted.append(await listener.accept())
            yielded.append(steps() - before)

    async with multi, anyio.create_task_group() as tg:
        tg.start_soon(acceptor)
        await anyio.wait_all_tasks_blocked()
        with waiting_clients(port, 1):
            await poll_until(lambda: accepted)
            assert await numbers_of(accepted) == [0]
    # one step to start waiting (the call parks), one when woken: no third
    assert yielded == [1]


@pytest.mark.parametrize("budget", ["long-budget", "spent-budget"])
async def test_the_idle_gate_takes_waiting_connections_on_the_budget(
    anyio_backend: Any, budget: str
) -> None:
    """``idletimeout`` above 0: the gate (a system task) takes connections that
    are there without a schedule point each while the budget lasts, and
    yields after each once it has run out; every connection reaches
    ``accept()`` with its first byte."""
    schedule, seconds, _ = BUDGET_CASES[budget]
    multi, listener, port = await listener_with_budget(schedule, seconds, idletimeout=5000)
    counter = StepCounter()
    async with multi:
        with waiting_clients(port):
            await all_there(listener)
            trio.lowlevel.add_instrument(counter)
            try:
                with anyio.fail_after(5):
                    streams = [await listener.accept() for _ in range(WAITING)]
            finally:
                trio.lowlevel.remove_instrument(counter)
            assert sorted(await numbers_of(streams)) == list(range(WAITING))
    gate_steps = counter.steps_named("anyio_iocp idle gate")
    if budget == "long-budget":
        # its first step takes them all, and it is woken again at most once
        # (as the application makes room)
        assert 1 <= gate_steps <= 3
    else:
        assert gate_steps >= WAITING


async def test_a_connection_that_fails_before_it_is_handed_over_is_closed(
    anyio_backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An accepted connection whose set-up fails (TCP_NODELAY on a connection
    reset meanwhile, where the listener's option is not inherited) is closed
    at once, not left to the garbage collector; ``accept()`` raises
    BrokenResourceError, and the next connection is accepted as usual."""
    failed: list[socket.socket] = []
    apply = AcceptedNodelay.apply

    def fail_once(self: AcceptedNodelay, sock: socket.socket) -> None:
        if not failed:
            failed.append(sock)
            raise ConnectionResetError("reset before TCP_NODELAY")
        apply(self, sock)

    monkeypatch.setattr(AcceptedNodelay, "apply", fail_once)
    multi, listener, port = await listener_with_budget("budget", BUDGET_SECONDS)
    async with multi:
        with waiting_clients(port, 2) as clients:
            with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError):
                await listener.accept()
            assert failed[0].fileno() == -1, "the connection's socket was left open"
            # its client sees the connection closed
            assert await anyio.to_thread.run_sync(peer_closed, clients[0])
            with anyio.fail_after(5):
                stream = await listener.accept()
            assert await numbers_of([stream]) == [1]
