"""The receive pool (anyio_iocp._flow.receive_pool) on its own: a stream whose
engine primitives are scripted, so that every order of completions, cancelled
and failed receives, and the end of stream can be set up exactly."""

from __future__ import annotations

import errno
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
from helpers import AppendFails, SliceFails, StepCounter

from anyio_iocp._flow import receive_pool
from anyio_iocp._flow.look_after_send import LooksAfterSends
from anyio_iocp._flow.receive_pool import ReceivePool
from anyio_iocp._flow.yield_first import (
    HIT_CREDIT,
    MAX_CREDIT,
    PROBE_AFTER,
    START_CREDIT,
    looked_again,
    should_yield_first,
)
from anyio_iocp._interface import yielding
from anyio_iocp._interface.budget import ScheduleBudget
from anyio_iocp._interface.settings import Tuning
from anyio_iocp._interface.stats import EngineCounters

SIZE = 4  # buffersize of the scripted stream


class ScriptedOp:
    """A posted receive: ``outcome`` is what the engine reports once ``done``."""

    def __init__(self) -> None:
        self.done = False
        self.outcome: bytes | OSError | None = None

    def complete(self, outcome: bytes | OSError | None) -> None:
        self.outcome = outcome
        self.done = True


class ScriptedEngine:
    closed = False

    def __init__(self) -> None:
        #: what wait() completes: (op index in the stream's posts, outcome)
        self.on_wait: list[tuple[int, bytes | OSError | None]] = []
        self.stream: ScriptedStream | None = None
        #: strict: a receive that would wait posts at once (no yield first)
        self.budget = ScheduleBudget("strict")
        self.looks = LooksAfterSends()

    def check_open(self) -> None:
        pass

    async def wait(self, op: Any) -> None:
        assert self.stream is not None
        for index, outcome in self.on_wait:
            self.stream.posts[index].complete(outcome)
        self.on_wait.clear()
        assert op.done
        await trio.lowlevel.checkpoint()

    async def wait_or_cancel(self, op: Any) -> None:
        raise NotImplementedError

    async def drain(self, ops: list[Any]) -> None:
        raise NotImplementedError


class ScriptedStream(ReceivePool):
    def __init__(self, sock: socket.socket, recvburst: int = 4) -> None:
        self._init_flow(sock, Tuning(recvburst=recvburst, buffersize=SIZE), EngineCounters())
        self._engine = self.scripted = ScriptedEngine()
        self.scripted.stream = self
        self._init_receive_pool()
        self._init_write_behind()
        #: every receive posted, in order
        self.posts: list[ScriptedOp] = []
        #: the count of each _post_receives call
        self.pools: list[int] = []

    def _post_receives(self, count: int) -> None:
        self.pools.append(count)
        for _ in range(count):
            op = ScriptedOp()
            self.posts.append(op)
            self._posted.append(op)

    def _receive_outcome(self, op: ScriptedOp) -> bytes | OSError | None:
        return op.outcome

    def _receive_cancelled(self) -> OSError:
        return OSError(errno.ECANCELED, "receive cancelled")

    def _pending_sends(self) -> int:
        return 0

    def send_at_once(self, data: memoryview) -> int:
        raise NotImplementedError

    async def send_rest(self, data: memoryview) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        self.sock.close()


@pytest.fixture
def stream() -> Iterator[ScriptedStream]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield ScriptedStream(a)
    a.close()
    b.close()


def post(stream: ScriptedStream, count: int) -> list[ScriptedOp]:
    stream._post_receives(count)
    return stream.posts[-count:]


def take_all(stream: ScriptedStream, max_bytes: int) -> list[bytes]:
    taken = []
    while stream._ready:
        taken.append(stream._take(max_bytes))
    return taken


def test_completed_receives_are_collected_in_posting_order(stream: ScriptedStream) -> None:
    first, second, third = post(stream, 3)
    # the later ones complete first: nothing may be taken before the first
    third.complete(b"ghi")
    second.complete(b"def")
    stream._collect()
    assert stream._ready == []
    assert len(stream._posted) == 3
    first.complete(b"abc")
    stream._collect()
    assert stream._posted == []
    assert take_all(stream, 100) == [b"abc", b"def", b"ghi"]


def test_takes_smaller_than_a_receive_keep_every_byte_in_order(stream: ScriptedStream) -> None:
    ops = post(stream, 3)
    for op, data in zip(ops, (b"abcd", b"efgh", b"ij"), strict=True):
        op.complete(data)
    stream._collect()
    # (the tail "h" and the whole "ij" fit in one take of 3: joined)
    assert take_all(stream, 3) == [b"abc", b"d", b"efg", b"hij"]


def test_a_cancelled_receive_in_the_middle_is_skipped_without_an_error(
    stream: ScriptedStream,
) -> None:
    for op, outcome in zip(post(stream, 3), (b"ab", None, b"cd"), strict=True):
        op.complete(outcome)
    stream._collect()
    # (joined in one take: nothing of the cancelled receive between them)
    assert take_all(stream, 100) == [b"abcd"]
    assert stream._recv_error is None


def test_a_failed_receive_comes_after_the_bytes_before_it_and_stays(
    stream: ScriptedStream,
) -> None:
    reset = OSError(errno.ECONNRESET, "reset")
    later = OSError(errno.EPIPE, "later")
    outcomes = (b"ab", reset, None, later)  # the engine cancels what follows a failure
    for op, outcome in zip(post(stream, 4), outcomes, strict=True):
        op.complete(outcome)
    stream._collect()
    assert stream._take(100) == b"ab"
    for _ in range(2):  # the first error, every time
        with pytest.raises(OSError) as caught:
            stream._take(100)
        assert caught.value is reset


def test_a_receive_whose_bytes_cannot_be_copied_out_is_kept_for_the_next_call(
    stream: ScriptedStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy that fails for want of memory loses nothing: the receive stays
    first in line and the next collect takes its bytes, in order."""
    ops = post(stream, 3)
    for op, data in zip(ops, (b"ab", b"cd", b"ef"), strict=True):
        op.complete(data)
    copy = stream._receive_outcome
    failing = [ops[1]]

    def short_of_memory(op: ScriptedOp) -> bytes | OSError | None:
        if op in failing:
            failing.remove(op)  # once
            raise MemoryError
        return copy(op)

    monkeypatch.setattr(stream, "_receive_outcome", short_of_memory)
    with pytest.raises(MemoryError):
        stream._collect()
    assert stream._posted == ops[1:], "the receive that failed to copy is still posted"
    stream._collect()
    assert take_all(stream, 100) == [b"abcd", b"ef"]  # (joined up to a buffer's size)


def test_a_receive_whose_bytes_cannot_be_queued_is_kept_for_the_next_call(
    stream: ScriptedStream,
) -> None:
    ops = post(stream, 2)
    for op, data in zip(ops, (b"ab", b"cd"), strict=True):
        op.complete(data)
    stream._ready = AppendFails()
    with pytest.raises(MemoryError):
        stream._collect()
    assert stream._posted == ops
    stream._collect()
    assert take_all(stream, 100) == [b"abcd"]


def test_a_take_whose_slice_fails_takes_nothing(stream: ScriptedStream) -> None:
    class Held(SliceFails):
        fail_stop = 3

    stream._ready.append(Held(b"abcdef"))
    with pytest.raises(MemoryError):
        stream._take(3)
    assert take_all(stream, 3) == [b"abc", b"def"]


def test_a_burst_read_that_cannot_be_cut_breaks_the_stream(stream: ScriptedStream) -> None:
    """The bytes were read from the socket: if they cannot be cut into the
    queue's pieces, the stream cannot go on without them."""

    class Read(SliceFails):
        fail_stop = 8  # the second piece

    with pytest.raises(MemoryError):
        stream._keep_ahead(Read(b"abcdefghij"), 4)
    assert stream._ready == []
    error = stream._recv_error
    assert isinstance(error, OSError) and error.errno == errno.ENOMEM
    assert isinstance(error.__cause__, MemoryError)
    with pytest.raises(OSError) as caught:
        stream._take(100)
    assert caught.value is error


def test_end_of_stream_comes_after_the_bytes_before_it(stream: ScriptedStream) -> None:
    for op, outcome in zip(post(stream, 3), (b"abcd", b"ef", b""), strict=True):
        op.complete(outcome)
    stream._collect()
    assert stream._take(3) == b"abc"
    assert stream._take(3) == b"def"  # (the tail and the next whole receive)
    assert stream._take(3) == b""
    assert stream._take(3) == b""


def test_receives_all_cancelled_report_the_cancel(stream: ScriptedStream) -> None:
    for op in post(stream, 2):
        op.complete(None)
    stream._collect()
    with pytest.raises(OSError) as caught:
        stream._take(10)
    assert caught.value.errno == errno.ECANCELED


def test_receives_ahead_are_posted_during_a_burst_once_the_reader_caught_up(
    stream: ScriptedStream,
) -> None:
    stream.pools.clear()
    (op,) = post(stream, 1)
    op.complete(b"abcd")  # full: k grows to 2, a burst
    stream._collect()
    assert stream.abd.k == 2
    assert stream._take(2) == b"ab"
    assert stream.pools == [1]  # bytes still ahead of the reader: nothing more yet
    assert stream._take(2) == b"cd"
    assert stream.pools == [1, 2]  # caught up: k receives ahead
    assert len(stream._posted) == 2


def test_no_receives_ahead_after_a_partial_receive(stream: ScriptedStream) -> None:
    first, second = post(stream, 2)
    first.complete(b"abcd")
    second.complete(b"ef")  # partial: the burst is over
    stream._collect()
    assert take_all(stream, 100) == [b"abcd", b"ef"]
    assert stream.pools == [2]
    assert stream._posted == []


def test_no_receives_ahead_after_the_end_of_stream(stream: ScriptedStream) -> None:
    first, second = post(stream, 2)
    first.complete(b"abcd")
    second.complete(b"")
    stream._collect()
    assert stream.abd.in_burst()
    assert stream._take(100) == b"abcd"
    assert stream.pools == [2]
    assert stream._take(100) == b""


def test_receive_waits_for_posted_receives_and_returns_them_in_order(
    stream: ScriptedStream,
) -> None:
    engine = stream.scripted
    got: list[bytes] = []

    async def main() -> None:
        # the socket holds nothing: the pool posts k (1) receive and waits
        engine.on_wait = [(0, b"abcd")]
        got.append(await stream.receive(100))
        # full receive: k is 2 and the next pool was posted ahead
        assert stream.pools == [1, 2]
        engine.on_wait = [(2, b"ij"), (1, b"efgh")]
        got.append(await stream.receive(2))
        got.append(await stream.receive(100))  # the tail and "ij", joined

    trio.run(main)
    assert got == [b"abcd", b"ef", b"ghij"]
    assert stream.usage("recvburst").in_use == 0


def test_usage_counts_posted_receives_and_bytes_ahead(stream: ScriptedStream) -> None:
    first, _second = post(stream, 2)
    first.complete(b"abc")
    stream._collect()
    assert stream.usage("recvburst").in_use == 2  # one posted, one holding bytes
    assert stream.usage("buffersize").in_use == 3


@pytest.fixture
def stream_and_peer() -> Iterator[tuple[ScriptedStream, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    yield ScriptedStream(a), b
    a.close()
    b.close()


def test_on_a_budget_a_receive_that_would_wait_yields_once_and_looks_again(
    stream_and_peer: tuple[ScriptedStream, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The peer answers while the receiving task yields: the bytes are taken
    without posting a receive, and the stream's credit for looking again grows."""
    stream, peer = stream_and_peer
    stream.scripted.budget = ScheduleBudget("budget")
    stream.yield_credit = credit = START_CREDIT  # a new stream's: one look
    yields = []
    real_yield = yielding.shielded_yield

    async def yield_while_the_peer_answers() -> None:
        yields.append(1)
        peer.send(b"abc")  # less than a full buffer (no burst)
        await real_yield()

    monkeypatch.setattr(receive_pool, "shielded_yield", yield_while_the_peer_answers)
    assert trio.run(stream.receive, 100) == b"abc"
    assert yields == [1]
    assert stream.pools == [], "the receive posted although its bytes came"
    assert stream.yield_credit == min(credit + HIT_CREDIT, MAX_CREDIT)


def test_on_a_budget_a_look_that_finds_nothing_posts_and_costs_credit(
    stream: ScriptedStream,
) -> None:
    stream.scripted.budget = ScheduleBudget("budget")
    stream.yield_credit = 1
    stream.scripted.on_wait = [(0, b"later")]
    assert trio.run(stream.receive, 100) == b"later"
    assert stream.pools == [1]
    assert stream.yield_credit == 0
    # without credit the next receive posts at once: no yield before it
    stream.scripted.on_wait = [(1, b"again")]
    steps: list[int] = []

    async def main() -> bytes:
        task = trio.lowlevel.current_task()
        counter = StepCounter()
        trio.lowlevel.add_instrument(counter)
        try:
            return await stream.receive(100)
        finally:
            steps.append(counter.steps[task])
            trio.lowlevel.remove_instrument(counter)

    assert trio.run(main) == b"again"
    assert steps == [1], "a stream without credit yielded before waiting"


def test_the_credit_rule() -> None:
    class Stream:
        yield_credit = START_CREDIT

    def waits_before_a_look(s: Stream) -> int:
        declined = 0
        while not should_yield_first(s):
            declined += 1
        return declined

    s = Stream()
    assert should_yield_first(s)  # a new stream looks before its first wait
    looked_again(s, False)  # nothing found: no credit; it waits at once, then
    assert waits_before_a_look(s) == PROBE_AFTER  # looks now and then
    looked_again(s, False)
    assert waits_before_a_look(s) == PROBE_AFTER - 1
    looked_again(s, True)  # found: looks before each wait from now on
    assert s.yield_credit == HIT_CREDIT
    assert should_yield_first(s) and should_yield_first(s)
    looked_again(s, False)
    assert should_yield_first(s)  # one miss does not cancel a hit
    for _ in range(10):
        looked_again(s, True)
    assert s.yield_credit == MAX_CREDIT


# -- a direct look during a burst reads several buffers in one call -----------


class RecordingSocket(socket.socket):
    """A socket that records the size each ``recv`` asked for (peeks aside)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock.family, sock.type, sock.proto, fileno=sock.detach())
        self.asked: list[int] = []

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if not flags & socket.MSG_PEEK:
            self.asked.append(bufsize)
        return super().recv(bufsize, flags)


class BurstReadingStream(ScriptedStream):
    #: three buffers per direct call during a burst (IOCP's own is four)
    burst_read_buffers = 3


#: 40 distinct bytes: a piece swapped, lost or repeated shows
NUMBERED = bytes(range(40))


def send_held(peer: socket.socket, data: bytes, reader: socket.socket) -> None:
    """Send ``data`` to a reader whose socket holds nothing, and wait until it
    holds all of it (peeked): on Windows a socket pair is TCP, and a direct
    look must not find only part of it."""
    peer.sendall(data)
    deadline = time.monotonic() + 5
    held = 0
    while held < len(data):
        assert time.monotonic() < deadline, f"the reader holds {held} of {len(data)} bytes"
        select.select([reader], [], [], 0.1)
        try:
            held = len(reader.recv(len(data), socket.MSG_PEEK))
        except BlockingIOError:
            held = 0


@contextmanager
def a_reader(
    cls: type[ScriptedStream] = BurstReadingStream, recvburst: int = 1
) -> Iterator[tuple[ScriptedStream, RecordingSocket, socket.socket]]:
    """A scripted stream of ``cls`` on a recording socket, and its peer."""
    a, b = socket.socketpair()
    a.setblocking(False)
    sock = RecordingSocket(a)
    try:
        yield cls(sock, recvburst=recvburst), sock, b
    finally:
        sock.close()
        b.close()


@pytest.fixture
def reader_and_peer() -> Iterator[tuple[ScriptedStream, RecordingSocket, socket.socket]]:
    with a_reader() as reader:
        yield reader


def receive_each(stream: ScriptedStream, sizes: list[int]) -> list[bytes]:
    """One ``receive()`` per size, in one run (strict: none waits here)."""

    async def main() -> list[bytes]:
        return [await stream.receive(size) for size in sizes]

    return trio.run(main)


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_a_direct_look_during_a_burst_reads_several_buffers_in_one_call(
    reader_and_peer: tuple[ScriptedStream, RecordingSocket, socket.socket],
) -> None:
    stream, sock, peer = reader_and_peer
    send_held(peer, NUMBERED, sock)
    got = receive_each(stream, [100] * 10)
    # the first read fills its buffer (a burst); from then on three buffers
    # per call, handed out one buffer at a time, in order
    assert sock.asked == [SIZE, 3 * SIZE, 3 * SIZE, 3 * SIZE]
    assert got == pieces(NUMBERED, SIZE)
    assert stream.counters.direct_recv == 4
    assert stream.pools == [], "a receive was posted although the bytes were there"


def test_without_burst_reads_each_call_reads_one_buffer() -> None:
    """The class default (io_uring's): one buffer per call, burst or not."""
    with a_reader(ScriptedStream) as (stream, sock, peer):
        send_held(peer, NUMBERED, sock)
        assert receive_each(stream, [100] * 10) == pieces(NUMBERED, SIZE)
        assert sock.asked == [SIZE] * 10
        assert stream.counters.direct_recv == 10


def test_the_pieces_of_a_burst_read_are_cut_at_max_bytes(
    reader_and_peer: tuple[ScriptedStream, RecordingSocket, socket.socket],
) -> None:
    stream, sock, peer = reader_and_peer
    send_held(peer, NUMBERED[:10], sock)
    got = receive_each(stream, [100, 2, 2, 2])
    assert sock.asked == [SIZE, 3 * 2]  # a full buffer, then three of max_bytes
    assert got == [NUMBERED[0:4], NUMBERED[4:6], NUMBERED[6:8], NUMBERED[8:10]]
    assert stream._ready == []


def test_a_piece_is_cut_again_for_a_smaller_max_bytes(
    reader_and_peer: tuple[ScriptedStream, RecordingSocket, socket.socket],
) -> None:
    stream, sock, peer = reader_and_peer
    send_held(peer, NUMBERED[:16], sock)
    got = receive_each(stream, [100, 100, 1, 100, 100])
    assert sock.asked == [SIZE, 3 * SIZE]
    assert got == [NUMBERED[0:4], NUMBERED[4:8], NUMBERED[8:9], NUMBERED[9:12], NUMBERED[12:16]]


def test_pieces_cut_small_are_joined_for_a_larger_max_bytes(
    reader_and_peer: tuple[ScriptedStream, RecordingSocket, socket.socket],
) -> None:
    stream, sock, peer = reader_and_peer
    send_held(peer, NUMBERED[:10], sock)
    got = receive_each(stream, [100, 2, 100])
    assert sock.asked == [SIZE, 3 * 2]  # a full buffer, then three pieces of 2
    # the two pieces left fit in one buffer (SIZE): joined
    assert got == [NUMBERED[0:4], NUMBERED[4:6], NUMBERED[6:10]]
    assert stream._ready == []


def test_a_read_short_of_what_it_asked_for_ends_the_burst(
    reader_and_peer: tuple[ScriptedStream, RecordingSocket, socket.socket],
) -> None:
    stream, sock, peer = reader_and_peer
    send_held(peer, NUMBERED[:4], sock)
    assert receive_each(stream, [100]) == [NUMBERED[:4]]  # full: a burst
    send_held(peer, NUMBERED[4:16], sock)  # all three buffers asked for
    assert receive_each(stream, [100] * 3) == pieces(NUMBERED[4:16], SIZE)
    send_held(peer, NUMBERED[16:21], sock)  # more than a buffer, less than asked
    assert receive_each(stream, [100, 100]) == [NUMBERED[16:20], NUMBERED[20:21]]
    send_held(peer, NUMBERED[21:29], sock)  # the burst is over: one buffer
    assert receive_each(stream, [100]) == [NUMBERED[21:25]]
    assert sock.asked == [SIZE, 3 * SIZE, 3 * SIZE, SIZE]


def test_reads_smaller_than_a_buffer_start_no_burst(
    reader_and_peer: tuple[ScriptedStream, RecordingSocket, socket.socket],
) -> None:
    """A reader that asks for less than a buffer fills what it asked for at
    every call; that is no burst (ABD counts full buffers)."""
    stream, sock, peer = reader_and_peer
    send_held(peer, NUMBERED[:6], sock)
    assert receive_each(stream, [2, 2, 2]) == pieces(NUMBERED[:6], 2)
    assert sock.asked == [2, 2, 2]


def test_a_read_that_drains_the_socket_posts_nothing_ahead() -> None:
    """With ``recvburst`` above 1: a read of several buffers that empties the
    socket ends the burst, so the pool posts no receives once its pieces are
    taken (an idle stream holds none)."""
    with a_reader(recvburst=4) as (stream, sock, peer):
        stream.abd.bursting = True  # the last receive came back full
        send_held(peer, NUMBERED[:5], sock)
        assert receive_each(stream, [100, 100]) == [NUMBERED[:4], NUMBERED[4:5]]
        assert sock.asked == [3 * SIZE]
        assert not stream.abd.bursting
        assert stream.pools == []


def test_the_end_of_stream_comes_after_the_pieces_of_a_burst_read(
    reader_and_peer: tuple[ScriptedStream, RecordingSocket, socket.socket],
) -> None:
    stream, sock, peer = reader_and_peer
    send_held(peer, NUMBERED[:16], sock)
    peer.shutdown(socket.SHUT_WR)
    got = receive_each(stream, [100] * 5)
    assert got == [*pieces(NUMBERED[:16], SIZE), b""]


def test_a_cancelled_receive_keeps_the_pieces_of_a_burst_read(
    reader_and_peer: tuple[ScriptedStream, RecordingSocket, socket.socket],
) -> None:
    stream, sock, peer = reader_and_peer
    send_held(peer, NUMBERED[:16], sock)
    got: list[bytes] = []

    async def main() -> None:
        got.append(await stream.receive(100))
        got.append(await stream.receive(100))  # reads 12: two pieces wait
        with trio.CancelScope() as scope:
            scope.cancel()
            got.append(await stream.receive(100))
        assert scope.cancelled_caught
        assert len(stream._ready) == 2
        got.append(await stream.receive(100))
        got.append(await stream.receive(100))

    trio.run(main)
    assert got == pieces(NUMBERED[:16], SIZE)
    assert sock.asked == [SIZE, 3 * SIZE]


def test_usage_counts_the_pieces_of_a_burst_read(
    reader_and_peer: tuple[ScriptedStream, RecordingSocket, socket.socket],
) -> None:
    stream, sock, peer = reader_and_peer
    send_held(peer, NUMBERED[:16], sock)
    receive_each(stream, [100, 100])
    # two buffers filled and not yet taken: more than recvburst's cap of 1
    assert stream.usage("recvburst") == (1, 2)
    assert stream.usage("buffersize").in_use == 8


def test_with_recvburst_above_1_the_pool_posts_ahead_as_before() -> None:
    """A stream whose ``recvburst`` lets ABD post receives ahead keeps doing
    so: its first full read posts ``k`` receives, the next pool follows them,
    and no read of several buffers comes between (the burst read is for
    streams that post none ahead)."""
    with a_reader(recvburst=4) as (stream, sock, peer):
        send_held(peer, NUMBERED[:4], sock)
        assert receive_each(stream, [100]) == [NUMBERED[:4]]
        assert stream.abd.k == 2
        assert stream.pools == [2]
        send_held(peer, NUMBERED[4:16], sock)  # bytes wait: no look is made
        stream.scripted.on_wait = [(0, NUMBERED[16:20]), (1, NUMBERED[20:24])]
        assert receive_each(stream, [100, 100]) == [NUMBERED[16:20], NUMBERED[20:24]]
        assert stream.pools == [2, 4]  # caught up: the next k receives
        assert sock.asked == [SIZE]


def test_a_look_after_a_yield_reads_several_buffers_during_a_burst(
    reader_and_peer: tuple[ScriptedStream, RecordingSocket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a budget, a receive that found nothing yields once and looks again;
    during a burst that second look reads several buffers too."""
    stream, sock, peer = reader_and_peer
    stream.scripted.budget = ScheduleBudget("budget")
    stream.yield_credit = START_CREDIT  # (one look after a yield)
    stream.abd.bursting = True  # the last receive came back full
    real_yield = yielding.shielded_yield

    async def yield_while_the_peer_sends() -> None:
        send_held(peer, NUMBERED[:12], sock)
        await real_yield()

    monkeypatch.setattr(receive_pool, "shielded_yield", yield_while_the_peer_sends)
    assert receive_each(stream, [100, 100, 100]) == pieces(NUMBERED[:12], SIZE)
    assert sock.asked == [3 * SIZE, 3 * SIZE]  # the look before the yield, the one after
    assert stream.pools == []


def test_a_post_ahead_that_runs_out_of_memory_loses_no_bytes_taken(
    stream: ScriptedStream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes a take removed reach the caller when the receives it posts
    ahead (a burst) cannot be allocated; the next wait posts them."""
    (op,) = post(stream, 1)
    op.complete(b"abcd")  # full: k grows to 2, a burst
    stream._collect()
    assert stream.abd.k == 2
    post_receives = stream._post_receives

    def short_of_memory(count: int) -> None:
        raise MemoryError

    monkeypatch.setattr(stream, "_post_receives", short_of_memory)
    assert stream._take(100) == b"abcd"  # caught up: the post ahead fails
    assert stream._posted == [] and stream._ready == []
    monkeypatch.setattr(stream, "_post_receives", post_receives)
    stream.scripted.on_wait = [(1, b"ef")]
    assert trio.run(stream.receive, 100) == b"ef"
