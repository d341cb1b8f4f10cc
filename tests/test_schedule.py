"""Schedule points on a budget (``anyio_iocp._interface.budget``), on every engine.

A stream call that completes without waiting yields only when the run's
budget has run out; in strict mode every call yields, as in Trio.  What must
hold in both modes: every call is a cancel point, a cancelled call moves no
byte, tasks that never wait still take turns and let a timeout fire, and the
setting is refused clearly when wrong.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import socket
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from typing import Any

import anyio
import pytest
import trio
from anyio.abc import SocketAttribute, SocketStream
from helpers import first_listener, open_pair, steps_of_this_task

from anyio_iocp._face.runstate import current_engine
from anyio_iocp._face.schedule import BUDGET_ENV, MAX_BUDGET_SECONDS, SCHEDULE_ENV
from anyio_iocp._interface.budget import BUDGET_SECONDS, SCHEDULES, ScheduleBudget

#: how long the busy tasks run at least, and when the sleeper's deadline is
BUSY_SECONDS = 0.6
SLEEP_SECONDS = 0.05
#: calls each busy task makes at least before they stop, and turns the other
#: task takes before a loop of failing calls gets its deadline: counted, so
#: that a machine that stalls the test makes it run longer, not see less
BUSY_CALLS = 100
TURNS = 20
#: a task that never yields keeps the others out until the loops end here
BOUND_SECONDS = 6.0
#: lateness and gaps allowed on a loaded machine (the budget itself is 1 ms);
#: a task that never yielded would make them about BOUND_SECONDS
SLACK = 1.0


@contextmanager
def kept_full(raw: socket.socket) -> Iterator[None]:
    """A thread keeps ``raw``'s peer supplied with bytes (blocking sends), so
    that the peer's receives find bytes without waiting."""
    stop = threading.Event()
    chunk = b"x" * 65536

    def feed() -> None:
        raw.settimeout(0.05)
        while not stop.is_set():
            try:
                raw.send(chunk)
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def kept_drained(raw: socket.socket) -> Iterator[None]:
    """A thread reads everything ``raw``'s peer sends, so its sends do not block."""
    stop = threading.Event()

    def drain() -> None:
        raw.settimeout(0.05)
        while not stop.is_set():
            try:
                if not raw.recv(1 << 20):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


class BusyWindow:
    """When the busy tasks stop: not before ``BUSY_SECONDS``, nor before the
    sleeper woke and each busy task made more than ``BUSY_CALLS`` calls (a
    stalled machine makes the window longer, not the counts smaller); at
    ``BOUND_SECONDS`` in any case."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.received: list[float] = []
        self.sent: list[float] = []
        self.woke: list[float] = []
        #: when each busy task saw the window end
        self.ended: dict[str, float] = {}

    def over(self, now: float) -> bool:
        elapsed = now - self.start
        if elapsed >= BOUND_SECONDS:
            return True
        counted = min(len(self.received), len(self.sent)) > BUSY_CALLS
        return elapsed >= BUSY_SECONDS and bool(self.woke) and counted


async def busy_receiver(stream: SocketStream, window: BusyWindow) -> None:
    while not window.over(now := time.monotonic()):
        await stream.receive(16)
        window.received.append(now)
    window.ended["receiver"] = now


async def busy_sender(stream: SocketStream, window: BusyWindow) -> None:
    while not window.over(now := time.monotonic()):
        await stream.send(b"y" * 16)
        window.sent.append(now)
    window.ended["sender"] = now


def longest_gap(times: list[float]) -> float:
    return max(b - a for a, b in itertools.pairwise(times))


@pytest.mark.anyio
@pytest.mark.parametrize("schedule", SCHEDULES)
async def test_tasks_that_never_wait_take_turns_and_a_timeout_fires(
    anyio_backend: Any, schedule: str
) -> None:
    """Two tasks whose calls never have to wait (one receives from a peer that
    keeps it supplied, one sends to a peer that keeps draining) both progress
    throughout, and a third task's timeout fires about on time: nobody runs
    for longer than the budget without yielding."""
    current_engine().budget = ScheduleBudget(schedule)
    listener_a, client_a, server_a = await open_pair()
    listener_b, client_b, server_b = await open_pair()
    feeder = client_a.extra(SocketAttribute.raw_socket).dup()
    drainer = client_b.extra(SocketAttribute.raw_socket).dup()

    async def sleeper(window: BusyWindow) -> None:
        with anyio.move_on_after(SLEEP_SECONDS):
            await anyio.sleep_forever()
        window.woke.append(time.monotonic() - (window.start + SLEEP_SECONDS))

    try:
        with kept_full(feeder), kept_drained(drainer):
            await anyio.sleep(0.1)  # the feeder's first bytes arrive
            window = BusyWindow(time.monotonic())
            async with anyio.create_task_group() as tg:
                tg.start_soon(sleeper, window)
                tg.start_soon(busy_receiver, server_a, window)
                tg.start_soon(busy_sender, server_b, window)
    finally:
        for closable in (feeder, drainer):
            closable.close()
        for resource in (client_a, server_a, listener_a, client_b, server_b, listener_b):
            await resource.aclose()

    start, received, sent, woke = window.start, window.received, window.sent, window.woke
    assert len(received) > BUSY_CALLS and len(sent) > BUSY_CALLS
    assert woke[0] < SLACK, f"the timeout fired {woke[0] * 1000:.0f} ms late"
    # each busy task was running throughout, up to the end of the window: no
    # turn of the other kept it out long
    received_gap = longest_gap([*received, window.ended["receiver"]])
    sent_gap = longest_gap([*sent, window.ended["sender"]])
    assert received_gap < SLACK, f"the receiver waited {received_gap:.3f} s"
    assert sent_gap < SLACK, f"the sender waited {sent_gap:.3f} s"
    assert received[0] - start < SLACK and sent[0] - start < SLACK


async def schedule_points_of(stream: SocketStream, peer: SocketStream, calls: int) -> int:
    """How many of ``calls`` receives that find their bytes waiting went
    through a schedule point."""
    await peer.send(b"z" * calls)
    got = b""
    while len(got) < 1:  # the bytes have reached the stream's side
        await anyio.sleep(0.05)
        got = await stream.receive(1)
    yielded = 0
    for _ in range(calls - 1):
        with steps_of_this_task() as steps:
            before = steps()
            assert await stream.receive(1) == b"z"
            yielded += steps() > before
    return yielded


@pytest.mark.anyio
@pytest.mark.schedule("strict")
async def test_strict_mode_makes_every_call_a_schedule_point() -> None:
    listener, client, server = await open_pair()
    async with listener, client, server:
        assert current_engine().budget.schedule == "strict"
        assert await schedule_points_of(server, client, 200) == 199


@pytest.mark.anyio
async def test_the_budget_lets_calls_that_did_not_wait_skip_the_yield() -> None:
    """The default: consecutive receives that find their bytes yield about
    once per budget, not once per call."""
    listener, client, server = await open_pair()
    async with listener, client, server:
        budget = current_engine().budget
        assert budget.schedule == "budget" and budget.seconds == BUDGET_SECONDS
        started = time.monotonic()
        yielded = await schedule_points_of(server, client, 200)
        elapsed = time.monotonic() - started
        # at most one per budget spent (plus the first), and far fewer than calls
        assert yielded <= 2 + elapsed / BUDGET_SECONDS
        assert yielded < 199


@pytest.mark.anyio
@pytest.mark.parametrize("schedule", SCHEDULES)
async def test_a_cancelled_call_moves_no_byte(anyio_backend: Any, schedule: str) -> None:
    """Every call is a cancel point, checked before any byte moves: a receive
    in a cancelled scope takes nothing, a send in one sends nothing."""
    current_engine().budget = ScheduleBudget(schedule)
    listener, client, server = await open_pair()
    async with listener, client, server:
        for message in (b"one", b"two", b"three"):
            await client.send(message)
            await anyio.sleep(0.02)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await server.receive()
            assert scope.cancelled_caught
            with anyio.CancelScope() as scope:
                scope.cancel()
                await client.send(b"never")
            assert scope.cancelled_caught
            assert await server.receive() == message
        await client.send(b"end")
        assert await server.receive() == b"end"


async def engine_schedule() -> tuple[str, float]:
    """The schedule and the budget's length of the run's engine (started here)."""
    listener, client, server = await open_pair()
    async with listener, client, server:
        budget = current_engine().budget
        return budget.schedule, budget.seconds


def test_the_setting_and_its_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEDULE_ENV, raising=False)
    run: Any = anyio.run
    assert run(engine_schedule, backend="iocp")[0] == "budget"
    assert (
        run(engine_schedule, backend="iocp", backend_options={"schedule": "strict"})[0] == "strict"
    )
    monkeypatch.setenv(SCHEDULE_ENV, "strict")
    assert run(engine_schedule, backend="iocp")[0] == "strict"
    # the option wins over the environment
    assert (
        run(engine_schedule, backend="iocp", backend_options={"schedule": "budget"})[0] == "budget"
    )
    with pytest.raises(
        ValueError, match="'schedule' must be one of 'budget', 'strict', not 'fast'"
    ):
        run(engine_schedule, backend="iocp", backend_options={"schedule": "fast"})
    monkeypatch.setenv(SCHEDULE_ENV, "never")
    with pytest.raises(ValueError, match=f"{SCHEDULE_ENV}='never': expected one of 'budget'"):
        run(engine_schedule, backend="iocp")
    with pytest.raises(ValueError, match="unknown schedule 'sometimes'"):
        ScheduleBudget("sometimes")
    with pytest.raises(ValueError, match="positive number of seconds"):
        ScheduleBudget("budget", 0.0)


def test_the_budget_length_and_its_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCHEDULE_ENV, raising=False)
    monkeypatch.delenv(BUDGET_ENV, raising=False)
    run: Any = anyio.run
    assert run(engine_schedule, backend="iocp") == ("budget", BUDGET_SECONDS)
    assert run(engine_schedule, backend="iocp", backend_options={"budget": 0.05}) == (
        "budget",
        0.05,
    )
    assert run(engine_schedule, backend="iocp", backend_options={"budget": 1}) == ("budget", 1.0)
    monkeypatch.setenv(BUDGET_ENV, "0.02")
    assert run(engine_schedule, backend="iocp") == ("budget", 0.02)
    # the option wins over the environment
    assert run(engine_schedule, backend="iocp", backend_options={"budget": 0.003}) == (
        "budget",
        0.003,
    )
    # strict mode has no budget
    strict = run(engine_schedule, backend="iocp", backend_options={"schedule": "strict"})
    assert strict[0] == "strict" and strict[1] == -float("inf")
    huge = 10**400  # beyond any float
    for bad in (0, -0.001, MAX_BUDGET_SECONDS * 2, float("inf"), float("nan"), True, "fast", huge):
        with pytest.raises(ValueError, match="backend option 'budget' must be a number of seconds"):
            run(engine_schedule, backend="iocp", backend_options={"budget": bad})
    # strict mode has no budget, and refuses a bad one all the same
    with pytest.raises(ValueError, match="backend option 'budget' must be a number of seconds"):
        run(engine_schedule, backend="iocp", backend_options={"schedule": "strict", "budget": "x"})
    monkeypatch.setenv(BUDGET_ENV, " ")  # blank: the default, as when unset
    assert run(engine_schedule, backend="iocp") == ("budget", BUDGET_SECONDS)
    for bad_env in ("soon", "0", "-1", "5"):
        monkeypatch.setenv(BUDGET_ENV, bad_env)
        with pytest.raises(ValueError, match=f"{BUDGET_ENV}='{bad_env}' must be a number"):
            run(engine_schedule, backend="iocp")


def test_a_longer_budget_yields_less(monkeypatch: pytest.MonkeyPatch) -> None:
    """The length reaches the stream layer: with the longest budget, calls
    that did not wait yield about once per second spent, not once per
    millisecond."""
    monkeypatch.delenv(SCHEDULE_ENV, raising=False)
    monkeypatch.delenv(BUDGET_ENV, raising=False)

    async def yields() -> tuple[int, float]:
        listener, client, server = await open_pair()
        async with listener, client, server:
            started = time.monotonic()
            yielded = await schedule_points_of(server, client, 2000)
            return yielded, time.monotonic() - started

    run: Any = anyio.run
    options = {"budget": MAX_BUDGET_SECONDS}
    yielded, elapsed = run(yields, backend="iocp", backend_options=options)
    assert yielded <= 2 + elapsed / MAX_BUDGET_SECONDS
    # the same calls under the default budget (1 ms) yield more often than
    # once per second spent
    yielded, elapsed = run(yields, backend="iocp")
    assert yielded > 2 + elapsed / MAX_BUDGET_SECONDS


@pytest.mark.anyio
async def test_a_pass_renews_the_budget() -> None:
    budget = current_engine().budget
    passes = budget.passes
    await trio.lowlevel.checkpoint()
    assert budget.passes > passes
    assert not budget.exhausted()  # a new pass: the budget is fresh
    strict = ScheduleBudget("strict")
    strict.new_pass()
    assert strict.exhausted()


async def failing_calls_take_turns(
    attempt: Callable[[], Awaitable[object]], errors: tuple[type[Exception], ...]
) -> None:
    """Retry ``attempt``, which fails with one of ``errors`` each time, beside
    a task that yields in a loop; once that task has had ``TURNS`` turns, with
    a deadline ``SLEEP_SECONDS * 4`` away: the calls failed, the deadline
    fired about on time, and the other task took its turns throughout."""
    ticks: list[float] = []
    failures = 0
    looping = True

    async def ticker() -> None:
        while True:
            await anyio.sleep(0)
            if not looping:
                return
            ticks.append(time.monotonic())

    start = time.monotonic()
    armed = end = start
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        with anyio.CancelScope() as scope:
            # (bounded: without schedule points neither the other task's turns
            # nor the deadline would ever come)
            while time.monotonic() - start < BOUND_SECONDS:
                if len(ticks) >= TURNS and scope.deadline == math.inf:
                    # the turns are counted first, so that a stalled machine
                    # cannot leave the other task fewer before the deadline
                    armed = time.monotonic()
                    scope.deadline = anyio.current_time() + SLEEP_SECONDS * 4
                try:
                    await attempt()
                except errors:
                    failures += 1
                else:
                    raise AssertionError("the call did not fail")
        end = time.monotonic()
        looping = False
    late = end - armed - SLEEP_SECONDS * 4
    assert scope.cancelled_caught, f"no deadline fired in {end - start:.1f} s ({len(ticks)} turns)"
    assert failures > 10
    assert late < SLACK, f"the timeout fired {late * 1000:.0f} ms late"
    assert len(ticks) > 10 and ticks[0] - start < SLACK, "the other task did not get its turns"
    gap = longest_gap([*ticks, end])
    assert gap < SLACK, f"the other task waited {gap:.3f} s"


@pytest.mark.anyio
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("kind", ["unix", "tcp"])
async def test_connects_that_fail_at_once_take_turns_and_a_timeout_fires(
    anyio_backend: Any, schedule: str, kind: str, tmp_path: Any
) -> None:
    """A loop of connects that fail without waiting (a UNIX path nobody
    listens on; a TCP port that refuses, its RST back before connect()
    returns) lets another task run and its own deadline fire: a failed
    connect is a schedule point too, on the budget or (strict) every time."""
    if kind == "unix" and not hasattr(socket, "AF_UNIX"):
        pytest.skip("no UNIX sockets here")
    from anyio._core._eventloop import get_async_backend

    current_engine().budget = ScheduleBudget(schedule)
    # bound but not listening: refused, and no client socket can take the
    # port and connect to itself (seen once under Wine with a closed port)
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    backend = get_async_backend()

    async def attempt() -> object:
        if kind == "unix":
            return await backend.connect_unix(str(tmp_path / "nobody"), socket.SOCK_STREAM)
        return await backend.connect_tcp("127.0.0.1", port)

    try:
        await failing_calls_take_turns(attempt, (OSError,))
    finally:
        holder.close()


#: calls that fail without waiting, every time they are made
FAILING_CALLS = [
    "receive-closed",
    "send-closed",
    "receive-reset",
    "send-reset",
    "udp-receive-closed",
    "udp-send-closed",
    "accept-closed",
    "receive_fds-closed",
    "send_fds-closed",
]


@asynccontextmanager
async def failing_call(kind: str) -> AsyncIterator[Callable[[], Awaitable[object]]]:
    """A call of ``kind`` that raises ClosedResourceError or
    BrokenResourceError at once, each time it is made (or EndOfStream: under
    Wine a reset socket may read as end of stream)."""
    if kind == "accept-closed":
        multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
        await multi.aclose()
        yield first_listener(multi).accept
        return
    if "_fds" in kind:
        if not hasattr(socket, "AF_UNIX") or sys.platform == "win32":
            pytest.skip("descriptors travel over UNIX sockets, not on Windows")
        from anyio._core._eventloop import get_async_backend

        left, right = socket.socketpair()
        stream = await get_async_backend().wrap_unix_stream_socket(left)
        right.close()
        await stream.aclose()
        if kind == "receive_fds-closed":
            yield partial(stream.receive_fds, 16, 1)
        else:
            yield partial(stream.send_fds, b"x", [0])
        return
    if kind.startswith("udp-"):
        udp = await anyio.create_udp_socket(local_host="127.0.0.1")
        await udp.aclose()
        if kind == "udp-receive-closed":
            yield udp.receive
        else:
            yield partial(udp.send, (b"x", ("127.0.0.1", 9)))
        return
    listener, client, server = await open_pair()
    try:
        if kind.endswith("-closed"):
            await server.aclose()
        else:
            # the client resets the connection (SO_LINGER 0): the server's
            # calls then fail with the reset, each time
            raw = client.extra(SocketAttribute.raw_socket)
            linger = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            await client.aclose()
            await anyio.sleep(0.1)  # the reset reaches the server's socket
        if kind.startswith("receive"):
            yield partial(server.receive, 16)
        else:
            if kind == "send-reset":
                # a write-behind send (io_uring's ring mode) reports the reset
                # at the next call: one send first, its completion reaped
                with contextlib.suppress(anyio.BrokenResourceError):
                    await server.send(b"x")
                await anyio.sleep(0.05)
            yield partial(server.send, b"x" * 16)
    finally:
        for resource in (client, server, listener):
            with contextlib.suppress(anyio.BrokenResourceError):  # (the reset, once more)
                await resource.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("kind", FAILING_CALLS)
async def test_calls_that_fail_at_once_take_turns_and_a_timeout_fires(
    anyio_backend: Any, schedule: str, kind: str
) -> None:
    """A loop that retries a stream or datagram call failing without waiting
    (a closed socket, a reset connection) lets another task run and its own
    deadline fire: a call that raises is a schedule point as one that
    returns, on the budget or (strict) every time."""
    current_engine().budget = ScheduleBudget(schedule)
    async with failing_call(kind) as attempt:
        # (EndOfStream: under Wine a reset socket may read as end of stream)
        await failing_calls_take_turns(
            attempt, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)
        )


@pytest.mark.anyio
@pytest.mark.schedule("strict")
async def test_a_connect_that_waited_adds_no_second_schedule_point(anyio_backend: Any) -> None:
    """A connect whose handshake had to be waited for (the listener's queue
    was full, so its SYN came again later) has yielded in that wait: like a
    stream call that waited, it makes no second schedule point, even in strict
    mode.  The connecting task is resumed once, by the end of the wait."""
    from anyio._core._eventloop import get_async_backend

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    steps_taken: list[int] = []

    async def make_room() -> None:
        await anyio.sleep(0.2)
        server.accept()[0].close()  # room for one more; the SYN comes again

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(make_room)
            with anyio.fail_after(10), steps_of_this_task() as steps:
                stream = await get_async_backend().connect_tcp("127.0.0.1", port)
                steps_taken.append(steps())
        await stream.aclose()
        assert steps_taken == [1]
    finally:
        filler.close()
        server.close()


async def bytes_waiting(stream: SocketStream, peer: SocketStream, count: int) -> None:
    """``count`` bytes from ``peer`` wait on ``stream``'s side (one is read)."""
    await peer.send(b"z" * (count + 1))
    with anyio.fail_after(5):
        while True:
            await anyio.sleep(0.05)
            if await stream.receive(1) == b"z":
                return


@pytest.mark.anyio
@pytest.mark.parametrize("schedule", SCHEDULES)
async def test_past_the_budget_a_send_leaves_its_schedule_point_to_the_next_call(
    anyio_backend: Any, schedule: str
) -> None:
    """Once the budget has run out, a send that did not wait makes no schedule
    point of its own: the task's next stream call makes it (a receive makes
    one in any case, by waiting or by yielding).  So a send and then a receive
    that finds its bytes go through one schedule point, not two; and sends in
    a row, on one stream or on several, make one every second call: a task
    never makes two stream calls past the budget without yielding.  In strict
    mode every call makes its own."""
    # a budget that has always run out already
    current_engine().budget = ScheduleBudget(schedule, 1e-9)
    listener, client, server = await open_pair()
    listener2, client2, server2 = await open_pair()
    async with listener, client, server, listener2, client2, server2:
        await bytes_waiting(server, client, 40)
        per_pair = []
        for _ in range(40):
            with steps_of_this_task() as steps:
                before = steps()
                await server.send(b"a")
                after_send = steps()
                assert await server.receive(1) == b"z"
                per_pair.append((after_send - before, steps() - after_send))
        expected = (1, 1) if schedule == "strict" else (0, 1)
        assert per_pair == [expected] * 40
        with steps_of_this_task() as steps:
            before = steps()
            for i in range(40):
                await (server, server2)[i % 2].send(b"b")
            sends_in_a_row = steps() - before
        assert sends_in_a_row == (40 if schedule == "strict" else 20)


@pytest.mark.anyio
async def test_a_new_streams_first_wait_looks_first_except_on_iocp(engine_name: str) -> None:
    """A new stream's first receive that finds nothing yields once and looks
    again before it waits (``_flow/yield_first.py``): two steps of the task.
    On the IOCP engine, where a look that finds nothing costs a round trip to
    the kernel (to the wineserver under Wine), it waits at once: one step."""
    listener, client, server = await open_pair()
    async with listener, client, server, anyio.create_task_group() as tg:

        async def answer_later() -> None:
            await anyio.sleep(0.2)
            await client.send(b"late")

        tg.start_soon(answer_later)
        with steps_of_this_task() as steps:
            before = steps()
            assert await server.receive() == b"late"
            taken = steps() - before
    looks_first = engine_name != "iocp" and not current_engine().budget.strict
    assert taken == (2 if looks_first else 1)


@pytest.mark.anyio
async def test_send_eof_is_a_cancel_point_and_a_schedule_point(engine_name: str) -> None:
    """As in Trio: in a cancelled scope ``send_eof()`` shuts nothing down, and
    otherwise it goes through a schedule point (before, it did neither when
    no send was pending)."""
    listener, client, server = await open_pair()
    async with listener, client, server:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await server.send_eof()
        assert scope.cancelled_caught
        await server.send(b"still open")
        assert await client.receive() == b"still open"
        with steps_of_this_task() as steps:
            before = steps()
            await server.send_eof()
            assert steps() > before
        with pytest.raises(anyio.EndOfStream):
            await client.receive()


def yields_at(lengths: list[int], byte_budget: int) -> list[int]:
    """The sends (numbered from 1) that must yield when sends that did not
    wait move ``lengths`` bytes: those that bring the stream's bytes since its
    last schedule point to ``byte_budget``."""
    due, moved = [], 0
    for number, length in enumerate(lengths, 1):
        moved += length
        if moved >= byte_budget:
            due.append(number)
            moved = 0
    return due


def long_budget_with_bytes(byte_budget: int) -> ScheduleBudget:
    """A time budget that does not run out during a test (1 s), and a small
    byte budget: only the bytes make calls yield."""
    budget = ScheduleBudget("budget", MAX_BUDGET_SECONDS)
    budget.byte_budget = byte_budget
    return budget


async def steps_to_receive(stream: SocketStream, count: int) -> tuple[bytes, int]:
    """``count`` bytes from ``stream`` (2 KiB a call at most), and the steps
    of this task it took."""
    data = bytearray()
    with steps_of_this_task() as steps:
        before = steps()
        while len(data) < count:
            data += await stream.receive(min(2048, count - len(data)))
        return bytes(data), steps() - before


async def receive_after_a_wait(stream: SocketStream, peer: SocketStream, data: bytes) -> None:
    """A receive that has to wait: ``peer`` sends ``data`` only later."""

    async def later() -> None:
        await anyio.sleep(0.1)
        await peer.send(data)

    async with anyio.create_task_group() as tg:
        tg.start_soon(later)
        assert await stream.receive(len(data)) == data


@pytest.mark.anyio
async def test_receives_spend_no_byte_budget_and_a_wait_starts_the_count_again(
    anyio_backend: Any,
) -> None:
    """The byte budget is the sender's: receives that find their bytes do not
    yield for the bytes they take (a reader drains its stream), and a receive
    that waited is a schedule point of the stream, so the bytes it sends
    afterwards are counted from 0."""
    current_engine().budget = long_budget_with_bytes(8192)
    listener, client, server = await open_pair()
    drainer = client.extra(SocketAttribute.raw_socket).dup()
    try:
        async with listener, client, server:
            payload = bytes(range(256)) * 128  # 32 KiB, in order
            await client.send(payload)
            await anyio.sleep(0.2)  # every byte is there (loopback): no receive waits
            assert await steps_to_receive(server, len(payload)) == (payload, 0)

            with kept_drained(drainer):
                stepped = []
                for i in range(6):  # 2 KiB each: 6 KiB, then a wait, then 6 KiB
                    if i == 3:
                        await receive_after_a_wait(server, client, b"w")
                    with steps_of_this_task() as steps:
                        before = steps()
                        await server.send(bytes([i]) * 2048)
                        stepped.append(steps() - before)
            # without the new count, the fourth send reached 8 KiB and yielded
            assert stepped == [0] * 6
    finally:
        drainer.close()


@pytest.mark.anyio
async def test_a_stream_that_sent_its_byte_budget_yields_at_that_send(
    anyio_backend: Any,
) -> None:
    """Sends that do not wait yield at the call that brings the bytes the
    stream sent since its last schedule point to the byte budget, however
    much time is left (a producer that never waits cannot fill a whole socket
    buffer before its reader runs), and do not leave that schedule point to
    the task's next call."""
    current_engine().budget = long_budget_with_bytes(8192)
    listener, client, server = await open_pair()
    drainer = client.extra(SocketAttribute.raw_socket).dup()
    try:
        async with listener, client, server:
            with kept_drained(drainer):
                stepped = []
                for i in range(16):
                    with steps_of_this_task() as steps:
                        before = steps()
                        await server.send(bytes([i]) * 2048)
                        stepped.append(steps() - before)
        assert [n for n, step in enumerate(stepped, 1) if step] == yields_at([2048] * 16, 8192)
    finally:
        drainer.close()


@pytest.mark.anyio
async def test_the_byte_budget_is_128_KiB_and_strict_mode_yields_at_every_call() -> None:
    assert current_engine().budget.byte_budget == 128 * 1024
    assert ScheduleBudget("strict").byte_budget == 0
