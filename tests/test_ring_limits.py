"""io_uring at its limits: a submission ring smaller than the work, a
completion ring that overflows while nobody reaps, and io_uring_enter
interrupted by signals."""

from __future__ import annotations

import errno
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute
from helpers import MakerFailsAt, first_listener, open_pair, poll_until, recv_exactly

import anyio_iocp
from anyio_iocp._face.runstate import current_engine

uring = pytest.importorskip("anyio_iocp._engines.io_uring._uring")
lib, ffi = uring.lib, uring.ffi


@pytest.fixture
def small_ring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rings of 4 submission and 8 completion entries for runs started in the test."""
    from anyio_iocp._engines.io_uring import engine as _uring_engine

    monkeypatch.setattr(_uring_engine, "RING_ENTRIES", 4)
    monkeypatch.setattr(_uring_engine, "RING_CQ_ENTRIES", 8)


def run_uring(main: Any) -> Any:
    return anyio.run(main, backend="iocp", backend_options={"engine": "io_uring"})


def test_more_operations_than_submission_entries(small_ring: None) -> None:
    """64 connections echoing with chains of up to 16 sends and 16 receives,
    through a submission ring of 4 entries: no error, every byte in order."""
    rng = random.Random(7)
    payloads = [
        [rng.randbytes(rng.choice((1, 100, 5000, 70000))) for _ in range(12)] for _ in range(64)
    ]
    ring_entries: list[int] = []

    async def main() -> None:
        multi = await anyio_iocp.create_tcp_listener(
            local_host="127.0.0.1", backlog=16, sendcap=16, recvburst=16, buffersize=1024
        )
        listener = first_listener(multi)
        port = listener.extra(SocketAttribute.local_port)
        ring_entries.append(current_engine().max_chain)  # type: ignore[attr-defined]

        async def echo_server() -> None:
            async with anyio.create_task_group() as tg:
                for _ in payloads:
                    stream = await listener.accept()
                    tg.start_soon(echo, stream)

        async def echo(stream: Any) -> None:
            async with stream:
                try:
                    while True:
                        await stream.send(await stream.receive())
                except anyio.EndOfStream:
                    pass

        async def client(parts: list[bytes]) -> None:
            stream = await anyio_iocp.connect_tcp(
                "127.0.0.1", port, sendcap=16, recvburst=16, buffersize=1024
            )
            async with stream:
                async with anyio.create_task_group() as tg:
                    received: list[bytes] = []

                    async def reader() -> None:
                        received.append(await recv_exactly(stream, sum(map(len, parts))))

                    tg.start_soon(reader)
                    for part in parts:
                        await stream.send(part)
                assert received == [b"".join(parts)]

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(echo_server)
                async with anyio.create_task_group() as clients:
                    for parts in payloads:
                        clients.start_soon(client, parts)
        await multi.aclose()

    run_uring(main)
    assert ring_entries == [4]


def test_completion_ring_overflow_loses_nothing(
    small_ring: None, trace_events: list[anyio_iocp.TraceEvent]
) -> None:
    """40 receives complete while the loop is blocked and nobody reaps: the
    8-entry completion ring overflows (the kernel says so), and every receive
    still gets its own bytes."""
    count = 40
    overflowed: list[bool] = []

    async def main() -> None:
        engine: Any = current_engine()
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]
        raw_clients = []
        streams = []
        for _ in range(count):
            streams.append(await anyio.connect_tcp("127.0.0.1", port))
            raw_clients.append(server.accept()[0])
        results: dict[int, bytes] = {}

        async def receive(i: int) -> None:
            results[i] = await recv_exactly(streams[i], 6)

        async with anyio.create_task_group() as tg:
            for i in range(count):
                tg.start_soon(receive, i)
            while len(engine._ops) < count:  # every receive posted
                await anyio.sleep(0.01)
            for i, raw in enumerate(raw_clients):
                raw.sendall(b"msg%03d" % i)
            time.sleep(0.3)  # block the loop: completions pile up unreaped
            overflowed.append(bool(lib.iou_sq_flags(engine._ring) & lib.IORING_SQ_CQ_OVERFLOW))
        assert results == {i: b"msg%03d" % i for i in range(count)}
        for stream in streams:
            await stream.aclose()
        for raw in raw_clients:
            raw.close()
        server.close()

    run_uring(main)
    assert overflowed == [True], "the test must overflow the completion ring"
    overflows = [e for e in trace_events if e.kind == "ring.cq_overflow"]
    assert overflows and overflows[0].fields["cq_entries"] == 8


#: run in a child process by the test below: a thread that must run Python
#: code before it sends the bytes a waiting submit waits for
WAIT_WHILE_A_THREAD_RUNS = """
import socket, threading
from anyio_iocp._engines.io_uring._uring import ffi, lib

ring_pp = ffi.new("iou_ring **")
assert lib.iou_open(ring_pp, 8, 16, 0) == 0
ring = ring_pp[0]
a, b = socket.socketpair()
buf = ffi.new("char[]", 64)
assert lib.iou_prep_recv(ring, a.fileno(), buf, 64, 0, 7) == 0
running = threading.Event()

def writer():
    running.set()
    total = sum(i * i for i in range(300_000))  # Python code: it needs the GIL
    b.send(str(total).encode())

thread = threading.Thread(target=writer)
thread.start()
running.wait()
assert lib.iou_submit(ring, 1) == 1  # posts the receive, waits for its completion
cqes = ffi.new("iou_cqe[]", 2)
assert lib.iou_reap(ring, cqes, 2) == 1 and cqes[0].user_data == 7
print(ffi.buffer(buf, cqes[0].res)[:].decode())
thread.join()
"""


def test_a_submit_that_waits_lets_other_threads_run() -> None:
    """The shim's calls keep the GIL (they return at once: _cffi_build/build_uring.py),
    except a submit, which lets go of it while it is in the kernel: so a
    thread that must run Python code to send the bytes a submit waits for
    gets to.  In a child process, so that a wait holding the GIL fails here
    by the timeout (the signal test below, which waits in this process, would
    hang instead)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WAIT_WHILE_A_THREAD_RUNS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(sum(i * i for i in range(300_000)))


def test_io_uring_enter_interrupted_by_signals_loses_nothing() -> None:
    """A blocking io_uring_enter is hit by a signal every millisecond while it
    waits for a receive: the shim retries after EINTR and the completion
    arrives with its bytes."""
    ring_pp = ffi.new("iou_ring **")
    assert lib.iou_open(ring_pp, 8, 16, 0) == 0
    ring = ring_pp[0]
    a, b = socket.socketpair()
    alarms = []
    previous = signal.signal(signal.SIGALRM, lambda *_: alarms.append(1))
    try:
        buf = ffi.new("char[]", 64)
        assert lib.iou_prep_recv(ring, a.fileno(), buf, 64, 0, 42) == 0
        assert lib.iou_submit(ring, 0) == 1

        def write_later() -> None:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(0.3)
            b.send(b"after the signals")

        writer = threading.Thread(target=write_later)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        writer.start()  # the writer inherits the blocked mask
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGALRM})
        signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
        started = time.monotonic()
        rc = lib.iou_submit(ring, 1)  # waits for the completion
        waited = time.monotonic() - started
        signal.setitimer(signal.ITIMER_REAL, 0)
        writer.join()
        assert rc == 0
        assert waited > 0.1, "the wait must have overlapped many signals"
        cqes = ffi.new("iou_cqe[]", 4)
        assert lib.iou_reap(ring, cqes, 4) == 1
        assert (cqes[0].user_data, cqes[0].res) == (42, len(b"after the signals"))
        assert ffi.buffer(buf, cqes[0].res)[:] == b"after the signals"
        assert alarms, "the Python handler saw the signals after the call"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        lib.iou_close(ring)
        a.close()
        b.close()


def test_a_reap_hands_out_completions_in_order_in_either_form() -> None:
    """150 completions: the struct form (probes and tests) reaps 100 of them,
    in order across its pieces of 64; the engine's columns the other 50."""
    ring_pp = ffi.new("iou_ring **")
    assert lib.iou_open(ring_pp, 256, 512, 0) == 0
    ring = ring_pp[0]
    try:
        for i in range(150):
            assert lib.iou_prep_nop(ring, 1000 + i) == 0
        assert lib.iou_submit(ring, 0) == 150
        cqes = ffi.new("iou_cqe[]", 100)
        assert lib.iou_reap(ring, cqes, 100) == 100
        assert [cqes[i].user_data for i in range(100)] == list(range(1000, 1100))
        user_data = ffi.new("uint64_t[]", 32)
        res = ffi.new("int32_t[]", 32)
        flags = ffi.new("uint32_t[]", 32)
        got: list[tuple[int, int, int]] = []
        while n := lib.iou_reap_columns(ring, user_data, res, flags, 32):
            columns = ffi.unpack(user_data, n), ffi.unpack(res, n), ffi.unpack(flags, n)
            got += zip(*columns, strict=True)
        assert got == [(1000 + i, 0, 0) for i in range(100, 150)]
    finally:
        lib.iou_close(ring)


def test_columns_carry_failures_and_the_overflow_in_order() -> None:
    """A completion ring of 8 overflows with 40 completions: no-ops, cancels
    that find nothing (-ENOENT), quiet sends that succeed (counted, not
    handed out) and quiet sends that fail (-EBADF, handed out).  Reaped in
    columns of 5, the overflow flushed between them, every completion
    arrives once, in order, with its result, and every quiet send counts."""
    from anyio_iocp._engines.io_uring.quiet_sends import quiet_user_data

    ring_pp = ffi.new("iou_ring **")
    assert lib.iou_open(ring_pp, 8, 8, 0) == 0
    ring = ring_pp[0]
    done = ffi.new("uint32_t[]", 4)
    watch = ffi.new("uint8_t[]", 4)
    table = ffi.new("iou_quiet *")
    table.done, table.watch, table.slots = done, watch, 4
    lib.iou_set_quiet(ring, table)
    a, b = socket.socketpair()
    try:
        expected = []
        for i in range(40):
            kind = i % 4
            if kind == 0:  # a quiet send that succeeds: counted in slot 1 only
                assert lib.iou_prep_send_quiet(ring, a.fileno(), b"x", 1, 0, 1) == 0
            elif kind == 1:
                assert lib.iou_prep_nop(ring, 2000 + i) == 0
                expected.append((2000 + i, 0))
            elif kind == 2:  # a cancel that finds nothing
                assert lib.iou_prep_cancel(ring, 1 << 40, 2000 + i) == 0
                expected.append((2000 + i, -errno.ENOENT))
            else:  # a quiet send that fails: handed out
                assert lib.iou_prep_send_quiet(ring, -1, b"x", 1, 0, 2) == 0
                expected.append((quiet_user_data(2, 1), -errno.EBADF))
            if i % 8 == 7:  # (8 submission entries at a time)
                submitted = lib.iou_submit(ring, 0)
                if submitted == -errno.EBUSY:
                    pytest.skip("this kernel refuses submissions while completions overflow")
                assert submitted == 8
        assert lib.iou_sq_flags(ring) & lib.IORING_SQ_CQ_OVERFLOW, "the test must overflow"
        user_data = ffi.new("uint64_t[]", 5)
        res = ffi.new("int32_t[]", 5)
        flags = ffi.new("uint32_t[]", 5)
        got: list[tuple[int, int]] = []
        while n := lib.iou_reap_columns(ring, user_data, res, flags, 5):
            got += zip(ffi.unpack(user_data, n), ffi.unpack(res, n), strict=True)
        assert got == expected
        assert not lib.iou_sq_flags(ring) & lib.IORING_SQ_CQ_OVERFLOW
        assert (done[1], done[2], table.completed, table.skipped) == (10, 10, 20, 10)
        assert b.recv(100) == b"x" * 10
    finally:
        lib.iou_close(ring)
        a.close()
        b.close()


@pytest.mark.anyio
# strict: the receive posts at once (on a budget a new stream's receive
# yields once first and would find the bytes without the ring)
@pytest.mark.parametrize("anyio_backend", [("iocp", {"engine": "io_uring", "schedule": "strict"})])
async def test_refused_submission_is_retried_without_another_wakeup(
    trace_events: list[anyio_iocp.TraceEvent],
) -> None:
    """The kernel refuses the submission (EAGAIN) eight times while nothing
    else could wake the loop: the retry timer resubmits, and the receive
    completes (before the fix it waited for the fail_after deadline)."""
    engine: Any = current_engine()
    listener, client, server = await open_pair()
    async with listener, client, server:
        real_submit = engine._submit
        refusals = [8]

        def refusing() -> int:
            if refusals[0]:
                refusals[0] -= 1
                return -errno.EAGAIN  # the entries stay prepared
            result: int = real_submit()
            return result

        engine._submit = refusing
        try:
            with anyio.fail_after(5):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.send, b"after the refusals")
                    assert await recv_exactly(server, 18) == b"after the refusals"
        finally:
            engine._submit = real_submit
        assert refusals == [0]
        assert engine._retry.refusals >= 4
        retries = [e for e in trace_events if e.kind == "ring.submit_retry"]
        assert len(retries) == engine._retry.refusals
        assert [e.fields["refusals"] for e in retries] == list(range(1, len(retries) + 1))
        assert all(e.fields["unsubmitted"] > 0 and e.fields["delay"] > 0 for e in retries)


def test_a_receive_chain_that_runs_out_of_memory_posts_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every operation of a linked chain of receives is made, registered and
    listed before its first entry is written: a MemoryError on the way
    leaves no entry in the ring, no operation registered and none listed."""
    from anyio_iocp._engines.io_uring import engine as _uring_engine

    async def main() -> None:
        engine: Any = current_engine()
        a, b = socket.socketpair()
        with a, b:
            from anyio_iocp._engines.io_uring.op import UringOp as real_op

            buffers = [ffi.new("char[]", 8) for _ in range(3)]
            posted: list[Any] = []
            registered = dict(engine._ops)
            space = lib.iou_sq_space(engine._ring)
            monkeypatch.setattr(_uring_engine, "UringOp", MakerFailsAt(real_op, 3))
            with pytest.raises(MemoryError):
                engine.post_recv_chain(a.fileno(), buffers, 8, posted)
            assert (posted, engine._ops, lib.iou_sq_space(engine._ring)) == (
                [],
                registered,
                space,
            )

            class ListFails(list[Any]):
                def extend(self, items: Any) -> None:
                    raise MemoryError

            monkeypatch.setattr(_uring_engine, "UringOp", real_op)
            with pytest.raises(MemoryError):
                engine.post_recv_chain(a.fileno(), buffers, 8, ListFails())
            assert (engine._ops, lib.iou_sq_space(engine._ring)) == (registered, space)
            # and a chain that can be made is posted whole, in order
            engine.post_recv_chain(a.fileno(), buffers, 8, posted)
            assert len(posted) == 3 and all(engine._ops[op.user_data] is op for op in posted)
            b.send(b"0123456789abcdef!")
            await poll_until(lambda: all(op.done for op in posted), step=0.001)
            assert [ffi.buffer(op.keep, op.result)[:] for op in posted] == [
                b"01234567",
                b"89abcdef",
                b"!",
            ]

    run_uring(main)
