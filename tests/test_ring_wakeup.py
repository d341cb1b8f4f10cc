"""How the io_uring engine's loop wakes up for completions (``_engines/io_uring/wakeup.py``).

With the ring's descriptor in Trio's epoll set, a wait that ends with a
completion wakes no task but the one the completion is for; the fallback (a
reaper task in ``wait_readable``) takes one extra task step per such wait.
Both must deliver every completion while the loop sleeps with nothing else to
wake it.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import anyio
import pytest
import trio
import trio.testing
from helpers import StepCounter, open_pair

import anyio_iocp
from anyio_iocp._engines.io_uring.wakeup import WAKEUP_ENV, EpollRingWatch, ring_watch
from anyio_iocp._face.runstate import current_engine

pytestmark = pytest.mark.skipif(
    anyio_iocp.engine_info().name != "io_uring", reason="the io_uring engine's wake-up"
)

REAPER = "anyio_iocp io_uring reaper"
ROUND_TRIPS = 20


def late_echo(sock: socket.socket, count: int) -> None:
    """A peer the loop knows nothing about: it answers each message 2 ms late,
    so the loop sleeps, and only the ring's completion can wake it."""
    with sock:
        for _ in range(count):
            data = sock.recv(100)
            threading.Event().wait(0.002)
            sock.sendall(data)


def round_trips_while_sleeping() -> tuple[Any, int]:
    """(the engine's watch, reaper task steps) for ROUND_TRIPS round trips in
    which the receiving task waits with the loop asleep."""

    async def main() -> tuple[Any, int]:
        counter = StepCounter()
        trio.lowlevel.add_instrument(counter)
        listener, client, server = await open_pair()
        raw = client.extra(anyio.abc.SocketAttribute.raw_socket).dup()
        await client.aclose()
        raw.setblocking(True)
        peer = threading.Thread(target=late_echo, args=(raw, ROUND_TRIPS))
        peer.start()
        try:
            before = counter.steps_named(REAPER)
            with anyio.fail_after(10):
                for i in range(ROUND_TRIPS):
                    message = b"ping %d" % i
                    await server.send(message)
                    assert await server.receive() == message
            steps = counter.steps_named(REAPER) - before
        finally:
            await server.aclose()
            await listener.aclose()
            peer.join()
        return current_engine()._watch, steps  # type: ignore[attr-defined]

    return anyio.run(main, backend="iocp", backend_options={"engine": "io_uring"})


def test_completions_wake_the_loop_without_a_task(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WAKEUP_ENV, raising=False)
    watch, reaper_steps = round_trips_while_sleeping()
    assert isinstance(watch, EpollRingWatch)
    assert reaper_steps == 0


def test_fallback_task_wakes_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback works too, and the counter above would see its steps."""
    monkeypatch.setenv(WAKEUP_ENV, "task")
    watch, reaper_steps = round_trips_while_sleeping()
    assert watch is None
    assert reaper_steps >= ROUND_TRIPS // 2


def test_ring_watch_needs_a_trio_run() -> None:
    assert ring_watch(0) is None  # no run in this thread: the fallback


def test_ring_watch_refuses_a_descriptor_trio_already_watches() -> None:
    async def main() -> object:
        a, b = socket.socketpair()
        with a, b:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.lowlevel.wait_readable, a)
                await trio.testing.wait_all_tasks_blocked()
                watch = ring_watch(a.fileno())
                nursery.cancel_scope.cancel()
        return watch

    assert trio.run(main) is None
