"""The io_uring engine's multishot receives: buffer pool, cap, starvation."""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from helpers import (
    SliceFails,
    assert_broken_by_no_memory,
    first_listener,
    make_busy,
    poll_until,
    recv_exactly,
    steps_of_this_task,
    wait_for_unreaped_completion,
)

import anyio_iocp
from anyio_iocp._face.runstate import current_engine

pytestmark = pytest.mark.anyio


def multishot_engine(engine_name: str) -> Any:
    engine: Any = current_engine()
    if engine_name != "io_uring" or not engine.multishot_recv:
        pytest.skip("multishot receives are the io_uring engine's, where the kernel has them")
    return engine


async def open_pairs(n: int, **tuning: int) -> tuple[Any, list[tuple[SocketStream, Any]]]:
    with anyio_iocp.tuning(None, **tuning):
        multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1")
    listener = first_listener(multi)
    port = listener.extra(SocketAttribute.local_port)
    pairs = []
    for _ in range(n):
        client = await anyio.connect_tcp("127.0.0.1", port)
        pairs.append((client, await listener.accept()))
    return multi, pairs


async def arm_multishot(server: SocketStream) -> Any:
    """Arm the busy server stream's multishot receive (a receive that gives up
    waiting leaves it armed); the stream's receiver."""
    with anyio.move_on_after(0.01):
        await server.receive()
    ms: Any = server._io._ms  # type: ignore[attr-defined]
    assert ms.armed is not None and not ms.armed.done
    return ms


async def close_pairs(pairs: list[tuple[SocketStream, Any]]) -> None:
    for client, server in pairs:
        await client.aclose()
        await server.aclose()


def record_give_backs(pool: Any) -> list[list[int]]:
    """The buffer ids each call of ``pool.give_back`` gives back, a list per
    call (the calls still give them back)."""
    calls: list[list[int]] = []
    give_back = pool.give_back

    def recording_give_back() -> None:
        calls.append(list(pool.taken))
        give_back()

    pool.give_back = recording_give_back
    return calls


async def test_a_stream_waits_with_single_receives_until_it_is_busy(engine_name: str) -> None:
    multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1)
    async with multi, client, server:
        ms: Any = server._io._ms
        with anyio.move_on_after(0.01):
            await server.receive()  # waits: a single receive from the pool
        single = ms.armed
        assert single is not None and ms.ready_bytes == 0
        await client.send(b"a")
        await poll_until(lambda: single.done, step=0.001)
        assert ms.armed is None, "a single receive ends with its first completion"
        assert await server.receive() == b"a"
        await make_busy(client, server)
        with anyio.move_on_after(0.01):
            await server.receive()  # waits: now a multishot receive
        armed: Any = ms.armed
        await client.send(b"b")
        await poll_until(lambda: ms.ready, step=0.001)
        assert not armed.done, "the multishot receive stays armed"
        assert server._io._ms.armed is armed
        assert await server.receive() == b"b"


async def test_receive_stays_armed_and_stops_at_its_cap(engine_name: str) -> None:
    """Armed with k * buffersize bytes in total, the receive ends by itself once
    they arrived, so a reader that does not read holds at most one buffer
    more than that."""
    multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1, buffersize=4096)
    async with multi, client, server:
        await make_busy(client, server)
        ms = await arm_multishot(server)
        armed = ms.armed
        for i in range(10):  # 10 small messages: the same operation takes them all
            await client.send(b"m%d;" % i)
            await anyio.wait_all_tasks_blocked()
            await anyio.sleep(0.001)
        assert ms.armed is armed, "one operation for many messages"
        got = b""
        while len(got) < len(b"".join(b"m%d;" % i for i in range(10))):
            got += await server.receive()
        assert got == b"".join(b"m%d;" % i for i in range(10))
        # nobody reads now: 64 KiB arrive, the receive stops after 4 KiB
        payload = random.Random(3).randbytes(65536)
        await client.send(payload)
        await poll_until(lambda: ms.armed is None, step=0.001)
        assert ms.ready_bytes < 2 * 4096, "the cap bounds what waits for the reader"
        assert await recv_exactly(server, len(payload)) == payload


async def test_a_dry_pool_falls_back_to_single_receives(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = multishot_engine(engine_name)
    from anyio_iocp._engines.io_uring import engine as _uring_engine

    # a pool of 2 buffers for 24 streams that all get bytes in the same pass
    monkeypatch.setattr(_uring_engine, "POOL_BYTES", 2 * 8192)
    monkeypatch.setattr(_uring_engine, "POOL_MIN_ENTRIES", 2)
    multi, pairs = await open_pairs(24, buffersize=8192)
    starved = 0
    async with multi, anyio.create_task_group() as tg:
        results: dict[int, bytes] = {}
        payloads = [random.Random(i).randbytes(30000) for i in range(len(pairs))]

        async def reader(i: int, stream: Any) -> None:
            nonlocal starved
            results[i] = await recv_exactly(stream, len(payloads[i]))
            starved += stream._io._ms.starvations

        for i, (_client, server) in enumerate(pairs):
            tg.start_soon(reader, i, server)
        await anyio.wait_all_tasks_blocked()
        assert [pool.size for pool in engine._pools.values()] == [8192]
        # all bytes sent at once, with no scheduler pass (no reap) in between
        for i, (client, _server) in enumerate(pairs):
            client.extra(SocketAttribute.raw_socket).sendall(payloads[i])
    assert results == dict(enumerate(payloads))
    assert starved > 0, "the pool ran dry (ENOBUFS) and the streams fell back"
    await close_pairs(pairs)


async def test_buffers_go_back_with_their_batch(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A completion's bytes are copied out of its buffer at once, and the
    buffer goes back to the kernel with the rest of its batch: a pool of 16
    buffers carries 200 messages of one armed receive without running dry,
    and holds none back once a reap is over."""
    engine = multishot_engine(engine_name)
    from anyio_iocp._engines.io_uring import engine as _uring_engine

    monkeypatch.setattr(_uring_engine, "POOL_BYTES", 16 * 4096)
    monkeypatch.setattr(_uring_engine, "POOL_MIN_ENTRIES", 16)
    multi, [(client, server)] = await open_pairs(1, buffersize=4096)
    async with multi, client, server:
        await make_busy(client, server)
        pool = engine.buffer_pool(4096)
        assert len(pool.buffers) == 16
        calls = record_give_backs(pool)
        ms = await arm_multishot(server)
        armed = ms.armed
        for i in range(200):
            message = b"%d;" % i
            await client.send(message)
            assert await server.receive() == message
            assert not pool.taken, "the buffers went back with their batch"
        assert ms.armed is armed, "one operation carried every message"
        assert ms.starvations == 0, "the pool never ran dry"
        assert sum(map(len, calls)) == 200, "each message came in a pool buffer, given back once"


def failing_copy(
    monkeypatch: pytest.MonkeyPatch, pool: Any, fails: Callable[[int, bytes], bool]
) -> list[int]:
    """Make the multishot reaper's copies fail (MemoryError) where
    ``fails(call number, bytes)`` says so; the buffer ids of the failed
    copies, as they happen."""
    from anyio_iocp._engines.io_uring import multishot

    copy = multishot._unpack
    calls = [0]
    lost: list[int] = []

    def short_of_memory(pointer: Any, size: int) -> bytes:
        data: bytes = copy(pointer, size)
        calls[0] += 1
        if fails(calls[0], data):
            lost.append(next(i for i, b in enumerate(pool.buffers) if b == pointer))
            raise MemoryError
        return data

    monkeypatch.setattr(multishot, "_unpack", short_of_memory)
    return lost


async def test_bytes_that_cannot_be_copied_out_break_the_stream_and_their_buffer_goes_back(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A completion whose bytes cannot be copied out (no memory) must not leave
    a gap: the reader gets the bytes before it, then an error, never the bytes
    after it; the receive is cancelled and the buffer goes back to the kernel."""
    engine = multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1, buffersize=4096)
    async with multi, client, server:
        await make_busy(client, server)
        pool = engine.buffer_pool(4096)
        given_back = record_give_backs(pool)
        lost = failing_copy(monkeypatch, pool, lambda _, data: data.startswith(b"lost"))
        ms = await arm_multishot(server)
        op = ms.armed
        await client.send(b"first;")
        await poll_until(lambda: bool(ms.ready), step=0.001)  # reaped, not read
        calls_before = len(given_back)
        await client.send(b"lost;")
        await poll_until(lambda: ms.error is not None, step=0.001)
        await client.send(b"after;")
        assert await server.receive() == b"first;", "the bytes before the loss come first"
        await assert_broken_by_no_memory(server.receive)  # "after;" is never handed out
        await poll_until(lambda: op.done, step=0.001)
        assert op.result == -errno.ECANCELED, "the receive was cancelled"
        assert len(lost) == 1
        assert lost[0] in [bid for call in given_back[calls_before:] for bid in call], (
            "the buffer of the lost bytes went back to the kernel after the loss"
        )
        assert not pool.taken


async def test_a_lost_copy_in_a_burst_posts_no_receives_ahead(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full buffer (a burst begins), then one whose copy fails: taking the
    first must not post receives ahead, which would hand out the bytes after
    the lost ones."""
    engine = multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1, buffersize=4096, recvburst=4)
    async with multi, client, server:
        await make_busy(client, server)
        pool = engine.buffer_pool(4096)
        io: Any = server._io
        if io._ms.armed is not None:  # (armed by the last warm-up: for one buffer)
            engine.request_cancel(io._ms.armed)
            await poll_until(lambda: io._ms.armed is None, step=0.001)
        io.abd.k = 2  # armed for two buffers, not in a burst yet
        ms = await arm_multishot(server)
        lost = failing_copy(monkeypatch, pool, lambda call, _: call == 2)
        payload = random.Random(5).randbytes(3 * 4096)
        await client.send(payload)
        await poll_until(lambda: ms.armed is None, step=0.001)
        assert lost and io.abd.in_burst(), "a full buffer, then a lost one"
        assert await server.receive() == payload[:4096]
        await assert_broken_by_no_memory(server.receive)
        assert not io._posted, "no receives were posted ahead after the loss"


def test_after_a_lost_copy_a_receive_queues_nothing_more_and_gives_every_buffer_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The completions of one reap, on their own: the second one's copy fails;
    the third's bytes are not queued (they would follow a gap), its buffer
    goes back too, the receive is cancelled once, and the final completion
    disarms it."""
    multishot = pytest.importorskip("anyio_iocp._engines.io_uring.multishot")
    ffi = multishot.ffi

    class Engine:
        def __init__(self) -> None:
            self.cancelled: list[Any] = []

        def request_cancel(self, op: Any) -> None:
            self.cancelled.append(op)

    class Pool:
        def __init__(self) -> None:
            self.size = 8
            self.buffers = [ffi.new("char[]", b"buffer%d" % i) for i in range(3)]
            self.taken: list[int] = []

    class Abd:
        def observe(self, full: bool) -> None:
            pass

    class Stream:
        abd = Abd()

    engine, pool = Engine(), Pool()
    receiver = multishot.MultishotReceiver(engine)
    op = multishot.MultishotOp(7, receiver, pool, Stream())
    receiver.armed = op
    failing_copy(monkeypatch, pool, lambda call, _: call == 2)
    more, shift = multishot.F_MORE, multishot.BUFFER_SHIFT
    op.complete(7, 0 << shift | more)
    op.complete(7, 1 << shift | more)  # the copy fails
    op.complete(7, 2 << shift | more)  # after the loss
    assert receiver.ready == [b"buffer0"]
    assert receiver.ready_bytes == 7
    assert pool.taken == [0, 1, 2]
    assert engine.cancelled == [op]
    assert isinstance(receiver.error, OSError) and receiver.error.errno == errno.ENOMEM
    op.complete(-errno.ECANCELED, 0)
    assert receiver.armed is None and op.done


def test_a_multishot_take_whose_slice_fails_takes_nothing() -> None:
    multishot = pytest.importorskip("anyio_iocp._engines.io_uring.multishot")

    class Held(SliceFails):
        fail_stop = 3

    receiver = multishot.MultishotReceiver(None)
    receiver.ready.append(Held(b"abcdef"))
    receiver.ready_bytes = 6
    with pytest.raises(MemoryError):
        receiver.take(3, 64)
    assert (receiver.take(3, 64), receiver.take(3, 64), receiver.ready_bytes) == (b"abc", b"def", 0)


async def test_a_batch_gives_its_buffers_back_in_one_call(engine_name: str) -> None:
    """Streams whose bytes arrive in the same pass are reaped in one batch,
    and the batch's buffers go back to the kernel in one call."""
    engine = multishot_engine(engine_name)
    multi, pairs = await open_pairs(8, buffersize=4096)
    async with multi, anyio.create_task_group() as tg:
        for client, server in pairs:
            await make_busy(client, server)
        pool = engine.buffer_pool(4096)
        calls = record_give_backs(pool)
        got: dict[int, bytes] = {}

        async def reader(i: int, stream: SocketStream) -> None:
            got[i] = await stream.receive()

        for i, (_client, server) in enumerate(pairs):
            tg.start_soon(reader, i, server)
        await anyio.wait_all_tasks_blocked()
        assert all(server._io._ms.armed is not None for _client, server in pairs)
        # (raw sends: the bytes are in the ring before the next pass reaps)
        for i, (client, _server) in enumerate(pairs):
            client.extra(SocketAttribute.raw_socket).send(b"to %d" % i)
        await poll_until(lambda: len(got) == len(pairs))
    assert got == {i: b"to %d" % i for i in range(len(pairs))}
    assert [len(ids) for ids in calls] == [len(pairs)], "one call gave the batch's buffers back"
    await close_pairs(pairs)


async def test_a_reap_from_a_task_hands_out_its_batch_whole(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receive that reaps for itself (``reap_ready``) runs in a task, whose
    code Trio does not protect from KeyboardInterrupt; the reap is protected,
    as the loop's own reaps are, so a batch taken off the ring is handed out
    whole."""
    from trio.lowlevel import currently_ki_protected

    engine = multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1)
    async with multi, client, server:
        await make_busy(client, server)
        await arm_multishot(server)
        assert not currently_ki_protected(), "a test's task is not protected"
        protected: list[bool] = []
        complete_batch = engine._complete_batch

        def recording(n: int) -> None:
            protected.append(currently_ki_protected())
            complete_batch(n)

        monkeypatch.setattr(engine, "_complete_batch", recording)
        client.extra(SocketAttribute.raw_socket).send(b"late")
        wait_for_unreaped_completion(engine)
        engine.reap_ready()  # from this task, as a receive does
        assert protected == [True]
        assert await server.receive() == b"late"


async def test_multishot_then_burst_then_multishot_keeps_order(engine_name: str) -> None:
    """Small messages (multishot), a burst (linked chains), small again."""
    multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1, buffersize=8192, recvburst=6)
    rng = random.Random(11)
    blocks = [rng.randbytes(rng.choice([7, 100, 8192, 50000, 300000])) for _ in range(60)]
    async with multi, client, server, anyio.create_task_group() as tg:

        async def sender() -> None:
            for block in blocks:
                await client.send(block)
                if len(block) < 200:
                    await anyio.sleep(0.002)  # let the reader wait: multishot again

        tg.start_soon(sender)
        expected = b"".join(blocks)
        assert await recv_exactly(server, len(expected)) == expected


async def test_a_receive_still_armed_comes_before_a_direct_one(engine_name: str) -> None:
    """Bytes that an armed receive took (its completion not reaped yet) come
    before bytes that arrived after them: with a receive armed, receive()
    reaps instead of calling recv directly, which would find the later bytes
    first."""
    engine = multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1)
    async with multi, client, server:
        with anyio.move_on_after(0.01):
            await server.receive()  # has to wait: arms a receive, then gives up
        assert server._io._ms.armed is not None
        raw = client.extra(SocketAttribute.raw_socket)
        raw.sendall(b"first")
        wait_for_unreaped_completion(engine)  # the armed receive took "first"
        raw.sendall(b"second")
        time.sleep(0.01)  # "second" waits in the socket (nothing reaps: no pass)
        got = b""
        with anyio.fail_after(5):
            while len(got) < len(b"firstsecond"):
                got += await server.receive()
        assert got == b"firstsecond"


@pytest.mark.schedule("strict")  # (the default yields on a budget)
async def test_bytes_the_reader_reaps_itself_still_make_a_checkpoint(engine_name: str) -> None:
    """When the completion is in the ring but not reaped yet, the receiving
    task reaps it and does not wait: receive() must still let other tasks run
    and must still see a cancellation, and a cancelled receive loses nothing."""
    engine = multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1)
    async with multi, client, server:
        await make_busy(client, server)
        ms = await arm_multishot(server)
        raw = client.extra(SocketAttribute.raw_socket)
        raw.send(b"one")
        wait_for_unreaped_completion(engine)
        assert not ms.ready
        with steps_of_this_task() as steps:
            before = steps()
            assert await server.receive() == b"one"
            assert steps() > before, "receive() was not a schedule point"

        raw.send(b"two")
        wait_for_unreaped_completion(engine)
        got_through = False
        with anyio.CancelScope() as scope:
            scope.cancel()
            await server.receive()
            got_through = True
        assert scope.cancelled_caught and not got_through, "receive() ignored the cancellation"
        assert await server.receive() == b"two"


async def lone_exchanges_then_wait(client: SocketStream, server: Any) -> Any:
    """Exchanges in which the bytes are there before each receive (direct
    receives that find them), then a receive that has to wait: returns the
    operation that wait armed, once its first message arrived."""
    from anyio_iocp._engines.io_uring.multishot import DIRECT_HITS

    # the client's bytes must reach the kernel within send(): no quiet sends
    current_engine().set_send_mode("direct")  # type: ignore[attr-defined]
    await make_busy(client, server)
    for i in range(DIRECT_HITS):
        await client.send(b"there %d" % i)
        assert await server.receive() == b"there %d" % i
    ms: Any = server._io._ms
    assert ms.armed is None and ms.direct_hits >= DIRECT_HITS
    with anyio.move_on_after(0.01):
        await server.receive()  # has to wait: arms
    armed = ms.armed
    assert armed is not None
    await client.send(b"late")
    await poll_until(lambda: ms.ready, step=0.001)
    assert await server.receive() == b"late"
    return armed


async def test_a_lone_stream_that_finds_its_bytes_waits_with_a_single_receive(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Direct receives that found bytes, and an engine whose reaps do not
    batch: the stream's next wait is a single receive (ended by its one
    completion)."""
    from anyio_iocp._engines.io_uring.multishot import PassLoad

    multishot_engine(engine_name)
    monkeypatch.setattr(PassLoad, "batched", lambda self, counters: False)
    multi, [(client, server)] = await open_pairs(1)
    async with multi, client, server:
        armed = await lone_exchanges_then_wait(client, server)
        assert armed.done, "a single receive ends with its first completion"


async def test_a_stream_of_a_batching_engine_keeps_the_multishot_receive(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anyio_iocp._engines.io_uring.multishot import PassLoad

    multishot_engine(engine_name)
    monkeypatch.setattr(PassLoad, "batched", lambda self, counters: True)
    multi, [(client, server)] = await open_pairs(1)
    async with multi, client, server:
        armed = await lone_exchanges_then_wait(client, server)
        assert not armed.done, "the multishot receive stays armed"


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "lone"])
async def test_a_busy_stream_whose_look_finds_nothing_arms_before_its_yield(
    engine_name: str, monkeypatch: pytest.MonkeyPatch, batched: bool
) -> None:
    """A busy stream with nothing armed (its last receive reached its cap, or
    a single one ended) whose first look finds nothing: among many streams
    (reaps batched) it arms its multishot receive before the yield, so the
    look after the yield makes no ``recv`` of its own; a lone stream looks
    with a second ``recv``, as before."""
    from anyio_iocp._engines.io_uring.multishot import PassLoad

    multishot_engine(engine_name)
    monkeypatch.setattr(PassLoad, "batched", lambda self, counters: batched)
    multi, [(client, server)] = await open_pairs(1)
    async with multi, client, server:
        current_engine().set_send_mode("direct")  # type: ignore[attr-defined]
        await make_busy(client, server)
        io: Any = server._io
        ms = io._ms
        assert ms.armed is None and io.yield_credit > 0, "nothing armed, and a look to make"
        looks: list[bytes | None] = []
        recv_now = io._recv_now

        def counting_recv_now(max_bytes: int) -> bytes | None:
            looks.append(recv_now(max_bytes))
            return looks[-1]

        monkeypatch.setattr(io, "_recv_now", counting_recv_now)
        with anyio.move_on_after(0.05):
            await server.receive()  # nothing comes: it waits
        assert looks == ([None] if batched else [None, None])
        armed = ms.armed
        assert armed is not None
        await client.send(b"later")
        assert await server.receive() == b"later"
        assert not armed.done, "a busy stream's multishot receive stays armed"


async def armed_pairs(n: int) -> tuple[Any, list[tuple[SocketStream, Any]]]:
    """``n`` busy pairs whose server sides wait with a multishot receive."""
    current_engine().set_send_mode("direct")  # type: ignore[attr-defined]
    multi, pairs = await open_pairs(n)
    for client, server in pairs:
        await make_busy(client, server)
        with anyio.move_on_after(0.01):
            await server.receive()  # has to wait: arms the multishot receive
        assert server._io._ms.armed is not None
    return multi, pairs


async def test_completions_reaped_one_at_a_time_are_not_batched(engine_name: str) -> None:
    """One armed stream whose receives each reap the one completion waiting
    for them (the peer's bytes are there before each receive, many receives
    in a pass): the engine's reaps do not batch."""
    from anyio_iocp._engines.io_uring.multishot import LOAD_WINDOW

    engine = multishot_engine(engine_name)
    multi, [(client, server)] = await armed_pairs(1)
    async with multi, client, server:
        assert engine.load.batched(engine.counters), "batched until a window is complete"
        reaps = engine.counters.reaps
        for i in range(2 * LOAD_WINDOW):
            await client.send(b"%d" % i)
            assert await server.receive() == b"%d" % i
        assert server._io._ms.armed is not None, "the bytes came through the multishot receive"
        assert engine.counters.reaps - reaps >= 2 * LOAD_WINDOW
        assert not engine.load.batched(engine.counters)


async def test_completions_of_many_streams_reaped_together_are_batched(engine_name: str) -> None:
    """Eight armed streams whose bytes all arrived before the first receive:
    one reap takes the eight completions, and the engine's reaps batch (the
    window judged before starts from not batched)."""
    from anyio_iocp._engines.io_uring.multishot import LOAD_WINDOW

    engine = multishot_engine(engine_name)
    multi, pairs = await armed_pairs(8)
    async with multi:
        engine.load._batched = False
        for i in range(LOAD_WINDOW):
            for client, _ in pairs:
                await client.send(b"%d" % i)
            await anyio.sleep(0.002)  # (a system call: the kernel posts the completions)
            for _, server in pairs:
                assert await server.receive() == b"%d" % i
        assert engine.load.batched(engine.counters)
        await close_pairs(pairs)


def test_completions_per_reap_are_judged_over_whole_windows() -> None:
    from anyio_iocp._engines.io_uring.multishot import BATCHED_COMPLETIONS, LOAD_WINDOW, PassLoad
    from anyio_iocp._interface.stats import EngineCounters

    load = PassLoad()
    counters = EngineCounters()
    assert load.batched(counters), "batched until a window is complete"
    counters.reaps, counters.completions = LOAD_WINDOW - 1, LOAD_WINDOW - 1
    assert load.batched(counters), "an incomplete window does not count"
    counters.reaps, counters.completions = LOAD_WINDOW, LOAD_WINDOW
    assert not load.batched(counters)
    counters.reaps += LOAD_WINDOW
    counters.completions += BATCHED_COMPLETIONS * LOAD_WINDOW - 1
    assert not load.batched(counters)
    counters.reaps += LOAD_WINDOW
    counters.completions += BATCHED_COMPLETIONS * LOAD_WINDOW
    assert load.batched(counters)
    counters.reaps += LOAD_WINDOW - 1
    assert load.batched(counters), "judged again only once a whole window has passed"


async def full_receive(client: SocketStream, server: Any, size: int) -> bytes:
    """``size`` bytes (the stream's whole buffer) sent, then taken by one
    receive that fills its buffer: ABD sees a burst."""
    payload = random.Random(size).randbytes(size)
    await client.send(payload)
    await anyio.sleep(0.2)  # every byte is there (loopback)
    assert await server.receive(size) == payload
    io: Any = server._io
    assert io.abd.bursting
    return payload


async def test_a_bursting_stream_waits_for_readiness_and_loses_nothing(engine_name: str) -> None:
    """After a receive that filled its buffer, a receive that has to wait waits
    in Trio's epoll and takes the bytes with a direct recv: no receive is
    armed on the ring.  A cancelled wait takes nothing; the bytes come in
    order; a partial receive ends the burst, and the next wait is the ring's."""
    engine = multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1)
    async with multi, client, server:
        io: Any = server._io
        ms = io._ms
        size = io.buffersize
        await make_busy(client, server)
        await full_receive(client, server, size)
        posted = dict(engine.counters.posted)
        with anyio.move_on_after(0.05):
            await server.receive()  # waits, then is cancelled: nothing taken
        assert ms.armed is None and io._readable_waits == 0
        got = bytearray()

        async def reader() -> None:
            got.extend(await server.receive())

        payload = random.Random(7).randbytes(3 * size)
        for start in range(0, len(payload), size):  # a buffer at a time: each fills it
            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await poll_until(lambda: io._readable_waits, step=0.001)
                assert ms.armed is None, "the wait is a readiness wait, not the ring's"
                await client.send(payload[start : start + size])
        assert got == payload
        assert engine.counters.posted == posted, "nothing went through the ring"
        # a receive that did not fill its buffer ends the burst
        await client.send(b"short")
        await anyio.sleep(0.2)
        assert await server.receive() == b"short"
        assert not io.abd.bursting
        with anyio.move_on_after(0.05):
            await server.receive()
        assert ms.armed is not None and io._readable_waits == 0
        await client.send(b"after")
        with anyio.fail_after(5):
            assert await server.receive() == b"after"


async def close_during_a_readiness_wait(
    server: Any, before_close: Callable[[], None] = lambda: None
) -> list[Exception]:
    """Close ``server`` from this task while another receives from it and
    has begun a readiness wait; what that receive raised (it must end within
    5 s)."""
    outcome: list[Exception] = []

    async def reader() -> None:
        try:
            await server.receive()
        except Exception as exc:  # the outcome is what the test checks
            outcome.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            while not server._io._readable_waits:
                await anyio.sleep(0.001)
            before_close()
            await server.aclose()
    return outcome


async def test_closing_a_stream_wakes_its_readiness_wait(engine_name: str) -> None:
    """A receive waiting for readiness when another task closes the stream
    ends with ClosedResourceError (Trio forgets the descriptor first)."""
    multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1)
    async with multi, client:
        io: Any = server._io
        await make_busy(client, server)
        await full_receive(client, server, io.buffersize)
        outcome = await close_during_a_readiness_wait(server)
        assert [type(exc) for exc in outcome] == [anyio.ClosedResourceError]
        assert io._readable_waits == 0


async def test_a_readiness_wait_that_begins_while_close_drains_is_woken(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() first lets write-behind sends go out (bounded), and a receive
    under way may enter Trio's epoll meanwhile (here it is held until close()
    has begun).  close() wakes it just before the socket closes, so it ends
    with ClosedResourceError instead of waiting forever on a closed
    descriptor."""
    from anyio_iocp._engines.io_uring import stream as uring_stream
    from anyio_iocp._flow import send_chain
    from anyio_iocp._interface.readiness import wait_readable

    multishot_engine(engine_name)
    monkeypatch.setattr(send_chain, "CLOSE_DRAIN_SECONDS", 0.3)
    close_begun = anyio.Event()

    async def wait_after_close_begun(sock: Any) -> None:
        await close_begun.wait()
        await wait_readable(sock)

    monkeypatch.setattr(uring_stream, "wait_readable", wait_after_close_begun)
    multi, [(client, server)] = await open_pairs(1, sendcap=4)
    async with multi, client:
        io: Any = server._io
        await make_busy(client, server)
        await full_receive(client, server, io.buffersize)
        with anyio.fail_after(10):  # the client never reads: sends end up behind
            while not io._write_behind_pending():
                await server.send(b"w" * 65536)
        # the reader enters Trio's epoll once close() has begun; close() waits
        # for the write-behind sends first
        outcome = await close_during_a_readiness_wait(server, close_begun.set)
        assert [type(exc) for exc in outcome] == [anyio.ClosedResourceError]
        assert io._readable_waits == 0 and not io._write_behind_pending()


async def test_a_reader_woken_by_its_multishot_receive_is_sent_woken(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The completion's handler wakes the reader itself (Parked.wake inlined):
    # it must send the one reused outcome too (read off the task right after).
    multishot_engine(engine_name)
    from anyio_iocp._engines.io_uring import multishot
    from anyio_iocp._interface.parking import WOKEN, wake_task

    woken_with: list[object] = []
    real = wake_task

    def recording(task: Any) -> None:
        real(task)
        woken_with.append(task._next_send)

    multi, [(client, server)] = await open_pairs(1)
    async with multi, client, server:
        await make_busy(client, server)
        monkeypatch.setattr(multishot, "wake_task", recording)
        async with anyio.create_task_group() as tg:
            got: list[bytes] = []

            async def reader() -> None:
                got.append(await server.receive())

            tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            assert server._io._ms.task is not None, "the reader waits on its multishot receive"
            await client.send(b"wake")
        assert got == [b"wake"]
        assert woken_with and all(outcome is WOKEN for outcome in woken_with), woken_with


async def test_a_receive_with_its_multishot_receive_armed_is_a_cancel_point(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receive that finds its multishot receive armed and nothing ready
    yields once before it waits (yield_first), and bytes can land during that
    yield.  It is a cancel point all the same, checked before anything is
    taken: in a cancelled scope it raises, and the bytes wait for the next
    receive."""
    from anyio_iocp._flow.yield_first import MAX_CREDIT

    engine = multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1)
    async with multi, client, server:
        await make_busy(client, server)
        io: Any = server._io
        ms = await arm_multishot(server)
        assert not ms.ready
        # (the raw socket: a quiet send of the client's would wait for the pass)
        client.extra(SocketAttribute.raw_socket).send(b"late")
        wait_for_unreaped_completion(engine)  # in the ring, reaped in the next pass
        io.yield_credit = MAX_CREDIT  # the receive yields once before it waits
        # its look before the yield finds nothing: the bytes land during the yield
        monkeypatch.setattr(engine, "reap_ready", lambda: None)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await server.receive()
        assert scope.cancelled_caught
        monkeypatch.undo()
        with anyio.fail_after(5):
            assert await server.receive() == b"late"


async def send_apart(client: SocketStream, ms: Any, pieces: list[bytes]) -> None:
    """Send each piece once the last one is reaped: one completion, one chunk
    waiting for the reader, each."""

    def reaped(count: int) -> Callable[[], bool]:
        return lambda: len(ms.ready) >= count

    for piece in pieces:
        waiting = reaped(len(ms.ready) + 1)
        await client.send(piece)
        await poll_until(waiting, step=0.001)


async def test_chunks_that_arrived_while_the_reader_was_away_come_in_one_receive(
    engine_name: str,
) -> None:
    """As one recv would have taken them on a readiness engine: whole chunks
    joined, in order, within max_bytes, and no chunk cut to fill it."""
    multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1)
    async with multi, client, server:
        await make_busy(client, server)
        ms = await arm_multishot(server)
        armed = ms.armed
        await send_apart(client, ms, [b"m0;", b"m1;", b"m2;"])
        assert len(ms.ready) == 3 and ms.armed is armed
        assert await server.receive() == b"m0;m1;m2;"
        assert ms.ready == [] and ms.ready_bytes == 0
        await send_apart(client, ms, [b"m3;", b"m4;", b"m5;"])
        assert await server.receive(7) == b"m3;m4;"  # "m5;" does not fit: not cut
        assert await server.receive(7) == b"m5;"
        assert ms.ready == [] and ms.ready_bytes == 0 and ms.armed is armed


async def test_a_receive_joins_no_more_than_a_buffer(engine_name: str) -> None:
    """Joined within min(max_bytes, buffersize): with a buffersize below
    max_bytes, what a receive returns still fits in one buffer."""
    multishot_engine(engine_name)
    multi, [(client, server)] = await open_pairs(1, buffersize=4096)
    async with multi, client, server:
        await make_busy(client, server)
        ms = await arm_multishot(server)
        # five chunks: the fifth crosses the receive's cap (4096), which ends it
        pieces = [bytes([65 + i]) * 1000 for i in range(5)]
        await send_apart(client, ms, pieces)
        assert await server.receive(65536) == b"".join(pieces[:4])
        assert await server.receive(65536) == pieces[4]
        assert ms.ready == [] and ms.ready_bytes == 0
