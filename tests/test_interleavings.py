"""Cancellation at every await, property-based: random programs of send,
receive, cancel, send_eof and close on both ends of a connection, each step
possibly cancelled after a random number of scheduler passes, with schedule
points on a budget and strict (every call a schedule point).  Whatever
happens, no byte may be lost, duplicated or reordered, and nothing may leak.

What a cancelled send delivers is a prefix of its data (the engine contract),
so the receiver's bytes are checked against every parse "each send in order,
cancelled ones cut anywhere".  Closing an end with unread data makes the
kernel reset the connection, so after an early close only a consistent
prefix is required; otherwise every byte of every completed send must arrive.
"""

from __future__ import annotations

import gc
import random
import socket
from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

import anyio
import pytest
from anyio import BrokenResourceError, ClosedResourceError, EndOfStream
from anyio.abc import SocketAttribute, SocketStream
from helpers import first_listener, open_fds, open_sockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import anyio_iocp
from anyio_iocp._face.runstate import current_engine
from anyio_iocp._interface.budget import SCHEDULES

MAX_EXAMPLES = 60
#: None: not cancelled (a receive still gives up after RECEIVE_WAIT seconds);
#: n: cancelled after n scheduler passes (0: before the operation starts)
CANCEL = st.one_of(st.none(), st.integers(0, 6))
END = st.sampled_from((0, 1))
SIZE = st.one_of(st.sampled_from((1, 1000, 65536, 200_000)), st.integers(1, 100_000))
SEND = st.tuples(st.just("send"), END, SIZE, CANCEL)
RECEIVE = st.tuples(st.just("receive"), END, SIZE, CANCEL)
SEND_EOF = st.tuples(st.just("send_eof"), END, st.just(0), CANCEL)
CLOSE = st.tuples(st.just("close"), END, st.just(0), CANCEL)
#: half the programs close an end early (after which only a consistent prefix
#: is required), half do not (every completed send must arrive in full)
PROGRAM = st.one_of(
    st.lists(st.one_of(SEND, SEND, RECEIVE, RECEIVE, SEND_EOF), min_size=6, max_size=30),
    st.lists(st.one_of(SEND, SEND, RECEIVE, RECEIVE, SEND_EOF, CLOSE), min_size=6, max_size=30),
)


class Tuned(NamedTuple):
    sendcap: int
    recvburst: int
    buffersize: int


TUNING = st.builds(
    Tuned, st.sampled_from((1, 4)), st.sampled_from((1, 4)), st.sampled_from((512, 65536))
)
RECEIVE_WAIT = 0.02
STEP_LIMIT = 1.0

totals = {"examples": 0, "clean": 0, "steps": 0, "cancelled": 0, "bytes_verified": 0}


@dataclass
class End:
    stream: SocketStream
    sends: list[tuple[bytes, bool]] = field(default_factory=list)  # (data, completed)
    received: bytearray = field(default_factory=bytearray)
    eof_sent: bool = False
    eof_seen: bool = False
    closed: bool = False
    failed: bool = False


def parses(received: bytes, sends: list[tuple[bytes, bool]]) -> tuple[bool, bool]:
    """(a parse of ``received`` exists, a parse that delivers every completed
    send in full exists).  Completed sends must appear whole unless the bytes
    end inside them; cancelled sends may be cut anywhere."""

    def common(pos: int, data: bytes) -> int:
        low, high = 0, min(len(data), len(received) - pos)
        while low < high:  # longest prefix of data found at pos
            mid = (low + high + 1) // 2
            if received[pos : pos + mid] == data[:mid]:
                low = mid
            else:
                high = mid - 1
        return low

    @cache
    def go(i: int, pos: int) -> tuple[bool, bool]:
        if pos == len(received):
            return True, all(not completed for _, completed in sends[i:])
        if i == len(sends):
            return False, False  # bytes nobody sent (or sent twice)
        data, completed = sends[i]
        matched = common(pos, data)
        if completed:
            if matched == len(data):
                return go(i + 1, pos + matched)
            return (pos + matched == len(received)), False  # cut off in flight
        valid = full = False
        for length in range(matched, -1, -1):
            v, f = go(i + 1, pos + length)
            valid, full = valid or v, full or f
            if full:
                break
        return valid, full

    return go(0, 0)


async def run_step(ends: list[End], step: tuple[str, int, int, int | None]) -> None:
    kind, index, size, cancel = step
    end, peer = ends[index], ends[1 - index]
    if end.closed or (kind in ("send", "send_eof") and end.eof_sent):
        return
    totals["steps"] += 1
    scope = anyio.CancelScope()
    scope.deadline = anyio.current_time() + (RECEIVE_WAIT if kind == "receive" else STEP_LIMIT)

    async def cancel_later(passes: int) -> None:
        for _ in range(passes):
            await anyio.sleep(0)
        scope.cancel()

    async with anyio.create_task_group() as tg:
        if cancel == 0:
            scope.cancel()
        elif cancel is not None:
            tg.start_soon(cancel_later, cancel)
        with scope:
            try:
                if kind == "send":
                    data = random.Random(len(end.sends) * 7919 + index).randbytes(size)
                    end.sends.append((data, False))
                    await end.stream.send(data)
                    end.sends[-1] = (data, True)
                elif kind == "receive":
                    end.received += await end.stream.receive(size)
                elif kind == "send_eof":
                    await end.stream.send_eof()
                    end.eof_sent = True
                else:
                    end.closed = True
                    await end.stream.aclose()
            except EndOfStream:
                end.eof_seen = True
            except (BrokenResourceError, ClosedResourceError):
                end.failed = True
        tg.cancel_scope.cancel()
    if scope.cancelled_caught:
        totals["cancelled"] += 1
    del peer


async def finish(ends: list[End]) -> None:
    """No more cancellation: shut both sides, read everything, close."""
    with anyio.fail_after(20):
        for end in ends:
            if not end.closed and not end.eof_sent:
                try:
                    await end.stream.send_eof()
                    end.eof_sent = True
                except (BrokenResourceError, ClosedResourceError):
                    end.failed = True
        for end in ends:
            while not (end.closed or end.eof_seen or end.failed):
                try:
                    end.received += await end.stream.receive()
                except EndOfStream:
                    end.eof_seen = True
                except (BrokenResourceError, ClosedResourceError):
                    end.failed = True
        for end in ends:
            if not end.closed:
                end.closed = True
                try:
                    await end.stream.aclose()
                except BrokenResourceError:
                    end.failed = True


def ops_in_flight() -> dict[int, Any]:
    """The engine's table of posted operations (io_uring, iocp; readiness has none)."""
    return dict(getattr(current_engine(), "_ops", {}))


def leak_counts() -> tuple[int, int]:
    """Descriptors (handles on Windows) and socket objects still open."""
    gc.collect()
    return open_fds(), open_sockets()


def run_program(engine: str, tunings: list[Tuned], program: list[Any], schedule: str) -> list[End]:
    ends: list[End] = []

    async def main() -> None:
        server, client_tuning = tunings[1], tunings[0]
        multi = await anyio_iocp.create_tcp_listener(
            local_host="127.0.0.1",
            sendcap=server.sendcap,
            recvburst=server.recvburst,
            buffersize=server.buffersize,
        )
        listener = first_listener(multi)
        port = listener.extra(SocketAttribute.local_port)
        client = await anyio_iocp.connect_tcp(
            "127.0.0.1",
            port,
            sendcap=client_tuning.sendcap,
            recvburst=client_tuning.recvburst,
            buffersize=client_tuning.buffersize,
        )
        ends.extend([End(client), End(await listener.accept())])
        await multi.aclose()
        early_close = False
        for step in program:
            early_close = early_close or step[0] == "close"
            await run_step(ends, step)
        await finish(ends)
        assert not ops_in_flight(), f"operations left in flight: {ops_in_flight()}"

    anyio.run(main, backend="iocp", backend_options={"engine": engine, "schedule": schedule})
    return ends


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_random_interleavings(engine_name: str, schedule: str) -> None:
    before = leak_counts()
    totals.update(dict.fromkeys(totals, 0))

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(tunings=st.lists(TUNING, min_size=2, max_size=2), program=PROGRAM)
    def check(tunings: list[Tuned], program: list[Any]) -> None:
        ends = run_program(engine_name, tunings, program, schedule)
        totals["examples"] += 1
        clean = not any(step[0] == "close" for step in program) and not any(
            end.failed for end in ends
        )
        totals["clean"] += clean
        for sender, receiver in ((ends[0], ends[1]), (ends[1], ends[0])):
            valid, full = parses(bytes(receiver.received), sender.sends)
            assert valid, "bytes lost, duplicated or reordered"
            if clean:
                assert full, "a completed send did not arrive in full"
                assert receiver.eof_seen
            totals["bytes_verified"] += len(receiver.received)
        assert leak_counts() == before, "descriptors or sockets leaked"

    check()
    print(f"\n{engine_name}, {schedule}: {totals}")


@pytest.mark.parametrize(
    ("received", "sends", "expected"),
    [
        (b"abcdef", [(b"abc", True), (b"def", True)], (True, True)),
        (b"abdef", [(b"abc", False), (b"def", True)], (True, True)),  # cut cancelled send
        (b"abcabcdef", [(b"abc", True), (b"def", True)], (False, False)),  # duplicated
        (b"defabc", [(b"abc", True), (b"def", True)], (False, False)),  # reordered
        (b"abcdf", [(b"abc", True), (b"def", True)], (False, False)),  # a byte lost
        (b"abcd", [(b"abc", True), (b"def", True)], (True, False)),  # cut off in flight
    ],
)
def test_the_checker_itself(
    received: bytes, sends: list[tuple[bytes, bool]], expected: tuple[bool, bool]
) -> None:
    assert parses(received, sends) == expected


ACCEPT_STEP = st.one_of(
    st.tuples(st.just("connect"), st.integers(1, 6)),
    st.tuples(st.just("accept"), CANCEL),
    st.tuples(st.just("backlog"), st.integers(1, 8)),
)


async def cancel_after_passes(scope: anyio.CancelScope, passes: int) -> None:
    for _ in range(passes):
        await anyio.sleep(0)
    scope.cancel()


def run_accept_program(engine: str, backlog: int, program: list[Any]) -> tuple[int, int]:
    """Returns (connections made, connections accepted); asserts each client
    was accepted exactly once."""
    counts = [0, 0]

    async def main() -> None:
        multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=backlog)
        listener = first_listener(multi)
        port = listener.extra(SocketAttribute.local_port)
        clients: dict[int, socket.socket] = {}
        accepted: dict[int, SocketStream] = {}

        async def accept_one() -> None:
            stream = await listener.accept()
            remote = stream.extra(SocketAttribute.remote_port)
            assert remote in clients, "accepted a connection nobody made"
            assert remote not in accepted, "accepted the same connection twice"
            accepted[remote] = stream

        for step in program:
            if step[0] == "connect":
                for _ in range(step[1]):
                    sock = socket.create_connection(("127.0.0.1", port))
                    clients[sock.getsockname()[1]] = sock
            elif step[0] == "backlog":
                anyio_iocp.configure(listener, backlog=step[1])
            else:
                cancel = step[1]
                scope = anyio.CancelScope()
                scope.deadline = anyio.current_time() + RECEIVE_WAIT
                async with anyio.create_task_group() as tg:
                    if cancel == 0:
                        scope.cancel()
                    elif cancel is not None:
                        tg.start_soon(cancel_after_passes, scope, cancel)
                    with scope:
                        await accept_one()
                    tg.cancel_scope.cancel()
        with anyio.fail_after(10):
            while len(accepted) < len(clients):
                await accept_one()
        with anyio.move_on_after(0.05) as scope:
            await accept_one()
        assert scope.cancelled_caught, "a connection appeared from nowhere"
        counts[:] = [len(clients), len(accepted)]
        for stream in accepted.values():
            await stream.aclose()
        for sock in clients.values():
            sock.close()
        await multi.aclose()
        assert not ops_in_flight()

    anyio.run(main, backend="iocp", backend_options={"engine": engine})
    return counts[0], counts[1]


def test_random_accept_interleavings(engine_name: str) -> None:
    """Connects, accepts cancelled after 0 to 6 passes, and live backlog
    changes (which withdraw posted accepts) in random order: every connection
    is accepted exactly once, and nothing leaks."""
    before = leak_counts()
    made = [0]

    @settings(max_examples=MAX_EXAMPLES, deadline=None)
    @given(backlog=st.integers(1, 8), program=st.lists(ACCEPT_STEP, min_size=4, max_size=25))
    def check(backlog: int, program: list[Any]) -> None:
        connections, accepted = run_accept_program(engine_name, backlog, program)
        assert connections == accepted
        made[0] += connections
        assert leak_counts() == before, "descriptors or sockets leaked"

    check()
    print(f"\n{engine_name}: {MAX_EXAMPLES} accept programs, {made[0]} connections")
