"""io_uring: every step that can fail comes before an entry is prepared.

An entry written to the submission ring goes to the kernel at the pass's
submission whatever happens after it.  So an operation's count, its place
in the engine's table and its place in the stream's list come before the
preparing call, and a failure on the way (here a ``MemoryError`` injected at
each step) leaves no entry in the ring, nothing registered, nothing listed
and nothing counted: no buffer freed while the kernel still uses it, no
send the caller is told failed going out anyway, no bytes reaching nobody.
"""

from __future__ import annotations

import errno
from typing import Any

import anyio
import pytest
from helpers import (
    AppendOrExtendFails,
    MakerFailsAt,
    SetItemFails,
    assert_broken_by_no_memory,
    fail_count_once,
    poll_until,
    read_to_eof,
    stream_and_peer,
)

from anyio_iocp._face.runstate import current_engine

pytestmark = pytest.mark.anyio

uring = pytest.importorskip("anyio_iocp._engines.io_uring._uring")
lib, ffi = uring.lib, uring.ffi

#: every 4-byte word numbered: a lost, repeated or swapped piece shows
PAYLOAD = b"".join(i.to_bytes(4, "big") for i in range(4096))


def state(engine: Any) -> tuple[dict[int, Any], dict[Any, int], dict[str, int], int]:
    """What a failed post must leave as it found it: the table, both counts
    and the room in the submission ring."""
    return (
        dict(engine._ops),
        dict(engine._posted_by_prep),
        dict(engine.counters.posted),
        lib.iou_sq_space(engine._ring),
    )


async def test_an_operation_the_table_cannot_take_prepares_nothing(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table's entry comes before the entry in the ring: a receive
    whose registration fails leaves no entry, so no kernel write into a
    buffer that nobody keeps; the count is taken back too.  Then the same
    receive posts, and the bytes reach it."""
    async with stream_and_peer(engine_name, "io_uring") as (stream, peer):
        engine: Any = current_engine()
        fd = stream._io.fd
        buf = ffi.new("char[]", 64)
        before = state(engine)
        monkeypatch.setattr(engine, "_ops", SetItemFails(engine._ops))
        with pytest.raises(MemoryError):
            engine.post_op(buf, lib.iou_prep_recv, fd, buf, 64, 0)
        assert state(engine) == before
        op = engine.post_op(buf, lib.iou_prep_recv, fd, buf, 64, 0)
        assert engine.holds(op)
        peer.sendall(b"to the receive that was posted")
        with anyio.fail_after(5):
            await engine.wait_or_cancel(op)
        assert ffi.buffer(buf, op.result)[:] == b"to the receive that was posted"


async def test_a_preparing_call_that_fails_takes_back_the_entry_and_the_count(
    engine_name: str,
) -> None:
    """A preparing call that refuses (here one that says EINVAL) raises,
    and the table and the counts are as before: no key left at 0."""
    async with stream_and_peer(engine_name, "io_uring") as (stream, _peer):
        engine: Any = current_engine()
        calls: list[int] = []

        def refusing(ring: Any, *args: Any) -> int:
            calls.append(len(args))
            return -22

        before = state(engine)
        with pytest.raises(OSError, match="io_uring submission"):
            engine.post_op(None, refusing, stream._io.fd)
        assert calls == [2]  # (the descriptor and the user_data)
        assert state(engine) == before
        assert refusing not in engine._posted_by_prep


CHAIN_STEPS = ["make", "table", "count", "list", "prepare"]


class LibFailingOnce:
    """The shim's library, whose chain preparing call fails once before it
    runs (as when its argument tuple cannot be made)."""

    def __init__(self, real: Any) -> None:
        self.real, self.failed = real, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def iou_prep_chain(self, *args: Any) -> int:
        if not self.failed:
            self.failed = True
            raise MemoryError("the call could not be made")
        result: int = self.real.iou_prep_chain(*args)
        return result


def fail_chain_step(
    where: str, kind: str, op_class: str, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> list[Any]:
    """The next chain's step ``where`` fails once (``kind``: what it counts
    its operations as; ``op_class``: the class they are made of); the list
    to give it as the stream's."""
    from anyio_iocp._engines.io_uring import engine as uring_engine

    if where == "make":
        maker = MakerFailsAt(getattr(uring_engine, op_class), 2)
        monkeypatch.setattr(uring_engine, op_class, maker)
    elif where == "table":
        monkeypatch.setattr(engine, "_ops", SetItemFails(engine._ops))
    elif where == "list":
        return AppendOrExtendFails()
    elif where == "count":
        fail_count_once(monkeypatch, kind)
    else:
        monkeypatch.setattr(uring_engine, "lib", LibFailingOnce(lib))
    return []


@pytest.mark.parametrize("where", CHAIN_STEPS)
async def test_a_send_chain_that_fails_on_the_way_prepares_nothing(
    engine_name: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step of a chain of sends fails once in turn: making its second
    operation, registering the first, counting them, listing the chain,
    the call that prepares its entries.  Nothing is prepared, registered,
    listed or counted, and the chain's views of the caller's memory are
    let go at once (a bytearray with a live view could not grow).  Then
    the chain posts whole and its bytes arrive in order."""
    async with stream_and_peer(engine_name, "io_uring") as (stream, peer):
        engine: Any = current_engine()
        io = stream._io
        data = bytearray(PAYLOAD)
        chunks = [memoryview(data)[i : i + 4096] for i in range(0, len(data), 4096)]
        before = state(engine)
        sending = fail_chain_step(where, "send", "SendOp", engine, monkeypatch)
        with pytest.raises(MemoryError):
            engine.post_send_chain(io.fd, chunks, io, False, sending)
        assert (state(engine), list(sending)) == (before, [])
        for chunk in chunks:
            chunk.release()
        data += b"!"  # no view of it is left
        monkeypatch.undo()
        chunks = [memoryview(data)[i : i + 4096] for i in range(0, len(data), 4096)]
        ops = engine.post_send_chain(io.fd, chunks, io, False, io._sending)
        assert io._sending == ops and all(engine.holds(op) for op in ops)
        await poll_until(lambda: all(op.done for op in ops), step=0.001)
        await stream.send_eof()
        assert read_to_eof(peer) == PAYLOAD + b"!"


@pytest.mark.parametrize("where", CHAIN_STEPS)
async def test_a_receive_chain_that_fails_on_the_way_prepares_nothing(
    engine_name: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a chain of receives: nothing prepared, registered,
    listed or counted.  Then the chain posts whole, and the bytes fill its
    buffers in order."""
    async with stream_and_peer(engine_name, "io_uring") as (stream, peer):
        engine: Any = current_engine()
        fd = stream._io.fd
        buffers = [ffi.new("char[]", 4096) for _ in range(3)]
        before = state(engine)
        posted = fail_chain_step(where, "recv", "UringOp", engine, monkeypatch)
        with pytest.raises(MemoryError):
            engine.post_recv_chain(fd, buffers, 4096, posted)
        assert (state(engine), list(posted)) == (before, [])
        monkeypatch.undo()
        posted = []
        engine.post_recv_chain(fd, buffers, 4096, posted)
        assert len(posted) == 3 and all(engine.holds(op) for op in posted)
        peer.sendall(PAYLOAD[:10000])
        await poll_until(lambda: all(op.done for op in posted), step=0.001)
        received = b"".join(ffi.buffer(op.keep, op.result)[:] for op in posted)
        # (in order: each receive of the chain runs after the one before it)
        assert received and PAYLOAD[:10000].startswith(received)


async def test_a_send_the_stream_cannot_list_sends_nothing(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``send()`` raises MemoryError when its send cannot be listed, and
    those bytes never reach the peer: the send is listed before its entry
    is written.  What is sent afterwards arrives, alone and whole."""
    async with stream_and_peer(engine_name, "io_uring") as (stream, peer):
        io = stream._io
        monkeypatch.setattr(io, "_send_now", lambda data: 0)  # every send posts
        monkeypatch.setattr(io, "_sending", AppendOrExtendFails(io._sending))
        with anyio.fail_after(5), pytest.raises(MemoryError):
            await stream.send(b"not sent")
        assert list(io._sending) == []
        with anyio.fail_after(5):
            await stream.send(PAYLOAD)
        await stream.send_eof()
        assert read_to_eof(peer) == PAYLOAD


async def test_a_quiet_send_whose_bytes_cannot_be_kept_prepares_nothing(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quiet send keeps its bytes by slot before its entry is written: if
    that fails, no entry is prepared (the kernel would read bytes nobody
    keeps) and the stream's count of quiet sends is unchanged (it would
    wait for a send that never completes).  Then the quiet send goes out."""
    async with stream_and_peer(engine_name, "io_uring") as (stream, peer):
        engine: Any = current_engine()
        io = stream._io
        slot = io._take_quiet_slot()
        assert slot
        quiet = engine.quiet
        before = (state(engine), quiet.posted, io.qposted, io.qlength)
        monkeypatch.setattr(quiet, "keep", SetItemFails(quiet.keep))
        with pytest.raises(MemoryError):
            engine.post_quiet_send(io, PAYLOAD, slot, len(PAYLOAD))
        assert (state(engine), quiet.posted, io.qposted, io.qlength) == before
        assert not io._quiet_in_flight()
        engine.post_quiet_send(io, PAYLOAD, slot, len(PAYLOAD))
        assert io._quiet_in_flight() and quiet.keep[slot] is PAYLOAD
        await poll_until(lambda: not io._quiet_in_flight(), step=0.001)
        await stream.send_eof()
        assert read_to_eof(peer) == PAYLOAD


def split_sends(engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chains of at most 4 parts of 1,000 bytes: a queued send of PAYLOAD
    (16,384 bytes) is longer than a chain."""
    from anyio_iocp._engines.io_uring import stream as uring_stream

    monkeypatch.setattr(uring_stream, "MAX_SEND", 1000)
    monkeypatch.setattr(engine, "max_chain", 4)


async def test_a_send_longer_than_a_chain_goes_out_in_chains_in_order(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued send longer than a whole chain: its head is posted, its
    rest stays queued, and every byte goes out once, in order."""
    async with stream_and_peer(engine_name, "io_uring") as (stream, peer):
        engine: Any = current_engine()
        io = stream._io
        split_sends(engine, monkeypatch)
        io._queued.append(PAYLOAD)
        io.post_queued_sends()  # the head; the rest follows as each chain completes
        assert len(io._sending) == 4 and len(io._queued[0]) == len(PAYLOAD) - 4000
        await poll_until(lambda: not io._queued and not io._sending, step=0.001)
        await stream.send_eof()
        assert read_to_eof(peer) == PAYLOAD


async def test_the_rest_of_a_split_send_is_made_before_its_head_is_posted(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view of a split send's rest is made before its head is posted:
    if making it fails (no memory), nothing is posted (after the post, the
    head would go out twice).  Bytes cannot be skipped on a stream, so the
    stream is broken, with an error that names the want of memory."""
    from anyio_iocp._engines.io_uring import stream as uring_stream

    async with stream_and_peer(engine_name, "io_uring") as (stream, peer):
        engine: Any = current_engine()
        io = stream._io
        split_sends(engine, monkeypatch)
        views = MakerFailsAt(memoryview, 2)  # the loop's view of the send, then its rest
        io._queued.append(PAYLOAD)
        before = state(engine)
        monkeypatch.setattr(uring_stream, "memoryview", views, raising=False)
        io.post_queued_sends()
        assert (state(engine), io._sending, io._queued) == (before, [], [])
        monkeypatch.undo()
        await assert_broken_by_no_memory(lambda: stream.send(b"after"))
        await stream.aclose()
        assert read_to_eof(peer) == b""


async def test_queued_sends_that_cannot_be_posted_break_the_stream_at_once(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write-behind sends are posted at the end of a scheduler pass; when
    that fails for want of memory, the stream is broken then: the next
    send says so, and the close does not wait for bytes that will never be
    posted (nothing would post them again)."""
    async with stream_and_peer(engine_name, "io_uring", sendcap=8) as (stream, peer):
        io = stream._io
        monkeypatch.setattr(io, "_send_now", lambda data: 0)  # every send is queued
        monkeypatch.setattr(io, "_sending", AppendOrExtendFails(io._sending))
        with anyio.fail_after(5):
            await stream.send(b"queued")  # returns: the bytes wait for the pass's end
        await poll_until(lambda: io._send_error is not None)  # at the pass's end
        assert io._queued == []
        await assert_broken_by_no_memory(lambda: stream.send(b"after"))
        with anyio.fail_after(2):  # (the close's wait for write-behind sends is 10 s)
            await stream.aclose()
        assert read_to_eof(peer) == b""


async def test_the_chain_call_prepares_all_or_nothing(engine_name: str) -> None:
    """``iou_prep_chain`` refuses what is not a chain of receives or sends,
    and a chain longer than the free slots, without preparing any entry."""
    async with stream_and_peer(engine_name, "io_uring") as (stream, _peer):
        engine: Any = current_engine()
        ring, fd = engine._ring, stream._io.fd
        space = lib.iou_sq_space(ring)
        n = space + 1
        buffer = ffi.new("char[]", 8)
        pointers = ffi.new("void *[]", [buffer] * n)
        lengths = ffi.new("unsigned[]", [8] * n)
        user_data = ffi.new("uint64_t[]", n)

        def chain(op: int, count: int) -> int:
            result: int = lib.iou_prep_chain(ring, op, fd, pointers, lengths, user_data, 0, count)
            return result

        assert chain(lib.IORING_OP_NOP, 1) == -errno.EINVAL
        assert chain(lib.IORING_OP_SEND, 0) == -errno.EINVAL
        assert chain(lib.IORING_OP_SEND, n) == -errno.EBUSY
        assert lib.iou_sq_space(ring) == space
