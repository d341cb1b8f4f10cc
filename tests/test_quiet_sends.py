"""The io_uring engine's quiet sends: handed to the ring, ``send()`` returns,
and the C reaper keeps the successful completions to itself."""

from __future__ import annotations

import gc
import socket
import threading
import warnings
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from helpers import first_listener, open_pair, recv_exactly

import anyio_iocp
from anyio_iocp._engines.io_uring import engine as engine_module
from anyio_iocp._engines.io_uring.multishot import LOAD_WINDOW
from anyio_iocp._engines.io_uring.quiet_sends import MANY_SENDERS, QUIET_AFTER
from anyio_iocp._face.runstate import current_engine
from anyio_iocp._flow import send_chain
from anyio_iocp._interface.budget import ScheduleBudget

pytestmark = pytest.mark.anyio


def ring_engine(engine_name: str) -> Any:
    """The run's io_uring engine, with every send that can going quiet."""
    if engine_name != "io_uring":
        pytest.skip("quiet sends are the io_uring engine's")
    engine: Any = current_engine()
    engine.set_send_mode("ring")
    return engine


def quiet_posted() -> int:
    return anyio_iocp.statistics().posted.get("send_quiet", 0)


class ThreadPeer:
    """A blocking socket served by a thread: echoes, or reads everything."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = bytearray()

    def echo(self, n: int) -> None:
        while n > 0:
            data = self.sock.recv(65536)
            if not data:
                return
            self.sock.sendall(data)
            n -= len(data)

    def read_all(self) -> None:
        while data := self.sock.recv(65536):
            self.received += data


async def peer_pair() -> tuple[SocketStream, ThreadPeer, Any]:
    """A stream of the engine whose peer is a plain blocking socket, and the
    stream's engine side."""
    listener = first_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    plain = socket.socket()
    await anyio.to_thread.run_sync(plain.connect, listener.extra(SocketAttribute.local_address))
    stream = await listener.accept()
    await listener.aclose()
    return stream, ThreadPeer(plain), stream._io  # type: ignore[attr-defined]


async def test_successful_quiet_sends_never_reach_python(engine_name: str) -> None:
    engine = ring_engine(engine_name)
    stream, peer, io = await peer_pair()
    thread = threading.Thread(target=peer.echo, args=(200 * 7,))  # 200 messages of 7 bytes
    thread.start()
    try:
        async with stream:
            before, skipped = quiet_posted(), engine.quiet.table.skipped
            for i in range(200):
                await stream.send(b"%07d" % i)
                assert await recv_exactly(stream, 7) == b"%07d" % i
            sent = quiet_posted() - before
            assert sent == 200, "every send went quiet"
            # the peer answered each one, so each completed before the next
            # send: none was watched, and the reaper kept every completion
            assert engine.quiet.table.skipped - skipped == 200
            assert not io._sending, "no send operation was ever registered"
    finally:
        peer.sock.close()
        thread.join()


async def test_bytes_keep_their_order_when_a_quiet_send_has_to_wait(engine_name: str) -> None:
    """The peer reads nothing at first: a quiet send fills the socket buffer
    and waits in the kernel, and the next send must not overtake it."""
    ring_engine(engine_name)
    stream, peer, io = await peer_pair()
    messages = [bytes([65 + i % 26]) * 60_000 + b"%06d" % i for i in range(120)]
    waited = 0
    async with stream:
        for message in messages:
            if io._quiet_in_flight():
                waited += 1  # this send() waits for the last one
            await stream.send(message)
            if waited == 3 and not peer.received and not hasattr(peer, "thread"):
                # now that sends have had to wait, let the peer read
                peer.thread = threading.Thread(target=peer.read_all)  # type: ignore[attr-defined]
                peer.thread.start()  # type: ignore[attr-defined]
        assert waited >= 3, "the test needs quiet sends that wait in the kernel"
        await stream.send_eof()
    await anyio.to_thread.run_sync(peer.thread.join)  # type: ignore[attr-defined]
    peer.sock.close()
    assert bytes(peer.received) == b"".join(messages)


async def test_a_mutable_buffer_may_be_reused_when_send_returns(engine_name: str) -> None:
    ring_engine(engine_name)
    stream, peer, _ = await peer_pair()
    buffer = bytearray(b"first message")
    async with stream:
        await stream.send(buffer)  # type: ignore[arg-type]
        buffer[:] = b"SECOND"  # before the pass ends: the ring has not sent it yet
        await stream.send(buffer)  # type: ignore[arg-type]
        await stream.send_eof()
        await anyio.to_thread.run_sync(peer.read_all)
    peer.sock.close()
    assert bytes(peer.received) == b"first messageSECOND"


async def send_until_a_quiet_send_failed(stream: SocketStream, peer: ThreadPeer, io: Any) -> None:
    """The peer resets the connection; quiet sends go until one has failed
    and its failure is known to the stream, not yet reported."""
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.sock.close()  # a reset
    with anyio.fail_after(5):
        while True:
            before = quiet_posted()
            await stream.send(b"into a reset connection")  # returns: it went quiet
            assert quiet_posted() == before + 1
            while io._quiet_in_flight():
                await anyio.sleep(0.001)
            if io._send_error is not None:
                return


async def test_a_failed_quiet_send_is_raised_by_the_next_call(engine_name: str) -> None:
    engine = ring_engine(engine_name)
    stream, peer, io = await peer_pair()
    async with stream:
        await send_until_a_quiet_send_failed(stream, peer, io)
        assert engine.quiet.table.skipped < engine.quiet.table.completed
        with pytest.raises(anyio.BrokenResourceError):
            await stream.send(b"after it")
        with pytest.raises(anyio.BrokenResourceError):
            await stream.receive()


@pytest.mark.parametrize("call", ["receive", "send"])
async def test_a_failed_quiet_send_outlives_a_cancelled_call(engine_name: str, call: str) -> None:
    """A call in a cancelled scope is a cancel point first, also when a
    failed quiet send waits to be reported: it raises Cancelled, and the
    send's error is not lost: nobody has seen it, so close() raises it."""
    ring_engine(engine_name)
    stream, peer, io = await peer_pair()
    await send_until_a_quiet_send_failed(stream, peer, io)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await (stream.receive() if call == "receive" else stream.send(b"x"))
    assert scope.cancelled_caught
    with pytest.raises(anyio.BrokenResourceError):
        await stream.aclose()


async def test_close_cancels_a_quiet_send_that_cannot_go(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = ring_engine(engine_name)
    monkeypatch.setattr(send_chain, "CLOSE_DRAIN_SECONDS", 0.2)
    stream, peer, io = await peer_pair()
    with anyio.fail_after(10):
        while not io._quiet_in_flight():
            await stream.send(b"x" * 60_000)  # nobody reads: the buffers fill
            await anyio.sleep(0)
        slot = io._qslot
        try:
            await stream.aclose()  # waits 0.2 s, then cancels it and waits for that
        except anyio.BrokenResourceError as exc:
            # the usual outcome: part of the send had gone out when it was
            # cancelled, and close() says that bytes were cut off
            assert "short send" in str(exc)
    assert slot not in engine.quiet.streams, "the slot was given back"
    assert "send_quiet" not in anyio_iocp.statistics().in_flight
    assert not any(op.kind == "send_quiet" for op in engine._ops.values())
    peer.sock.close()


def test_a_run_ends_with_a_quiet_send_that_cannot_go(engine_name: str) -> None:
    """A stream never closed: the end of the run cancels its quiet send and
    waits for it (instead of abandoning it after RUN_END_DRAIN_SECONDS)."""
    if engine_name != "io_uring":
        pytest.skip("quiet sends are the io_uring engine's")

    async def main() -> tuple[SocketStream, ThreadPeer, Any]:
        ring_engine(engine_name)
        stream, peer, io = await peer_pair()
        with anyio.fail_after(10):
            while not io._quiet_in_flight():
                await stream.send(b"x" * 60_000)  # nobody reads: the buffers fill
                await anyio.sleep(0)
        return stream, peer, io

    stream, peer, io = anyio.run(main, backend="iocp", backend_options={"engine": "io_uring"})
    try:
        assert not io._quiet_in_flight(), "the run ended with the quiet send in flight"
        assert not io._engine._ops
    finally:
        peer.sock.close()
        stream._raw_socket.close()


async def connected_pairs(listener: Any, port: int, count: int) -> list[tuple[Any, Any]]:
    pairs = []
    for _ in range(count):
        client = await anyio.connect_tcp("127.0.0.1", port)
        pairs.append((client, await listener.accept()))
    return pairs


async def send_round(pairs: list[tuple[Any, Any]]) -> None:
    """Every client sends once, then the next scheduler pass."""
    for client, _server in pairs:
        await client.send(b"x")
    await anyio.sleep(0)


# MANY_SENDERS + 2 streams: a window's average stays above the threshold when
# a few of its passes run other tasks (connecting, accepting) and send nothing
@pytest.mark.parametrize("streams", [1, MANY_SENDERS + 2])
async def test_auto_goes_quiet_when_passes_have_several_sending_streams(
    engine_name: str, streams: int
) -> None:
    if engine_name != "io_uring":
        pytest.skip("quiet sends are the io_uring engine's")
    engine: Any = current_engine()
    engine.set_send_mode("auto")
    # each round one pass, as send_round means it: on the default 1 ms budget a
    # slow machine splits a round's sends over passes of one or two senders
    engine.budget = ScheduleBudget("budget", 60.0)
    listener = first_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    port = listener.extra(SocketAttribute.local_port)
    pairs = await connected_pairs(listener, port, streams)
    before = quiet_posted()
    rounds = 0
    # a window of LOAD_WINDOW passes decides: the second complete window of
    # sending passes at the latest (the first may have begun before them)
    while not engine.quiet_now and rounds < 3 * LOAD_WINDOW:
        await send_round(pairs)
        rounds += 1
    if streams == 1:
        assert not engine.quiet_now, "a lone sending stream sends directly"
        assert quiet_posted() == before
    else:
        assert engine.quiet_now, f"still direct after {rounds} passes of {streams} senders"
        assert rounds >= LOAD_WINDOW // 2, "quiet before a window of load was seen"
        assert quiet_posted() == before, "quiet before the engine said so"
        await send_round(pairs)
        assert quiet_posted() == before + streams, "every stream's send went quiet"
    for client, server in pairs:
        await client.aclose()
        await server.aclose()
    await listener.aclose()


async def test_a_new_streams_first_sends_go_directly(engine_name: str) -> None:
    """A short connection never pays for a slot: a stream's first QUIET_AFTER
    sends go directly, even while every other send goes quiet."""
    if engine_name != "io_uring":
        pytest.skip("quiet sends are the io_uring engine's")
    engine: Any = current_engine()
    engine.set_send_mode("auto")  # (a stream made under "ring" goes quiet at once)
    listener, newcomer, server = await open_pair()
    engine.set_send_mode("ring")  # from now on, every send that can goes quiet
    before = quiet_posted()
    for _ in range(QUIET_AFTER):
        await newcomer.send(b"y")
    assert quiet_posted() == before
    await newcomer.send(b"y")
    assert quiet_posted() == before + 1
    assert await recv_exactly(server, QUIET_AFTER + 1) == b"y" * (QUIET_AFTER + 1)
    await newcomer.aclose()
    await server.aclose()
    await listener.aclose()


def test_a_bad_send_mode_is_refused(monkeypatch: pytest.MonkeyPatch, engine_name: str) -> None:
    if engine_name != "io_uring":
        pytest.skip("quiet sends are the io_uring engine's")
    monkeypatch.setenv(engine_module.SEND_MODE_ENV, "sometimes")

    async def main() -> None:
        await anyio.create_tcp_listener(local_host="127.0.0.1")  # the engine starts

    expected = "ANYIO_IOCP_SEND='sometimes': expected one of auto, ring, direct"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        with pytest.raises(ValueError, match=expected):
            anyio.run(main, backend="iocp", backend_options={"engine": "io_uring"})
        gc.collect()
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not leaked, "the listener's socket was left open"


async def test_a_second_send_in_one_pass_does_not_wait_for_the_quiet_one(engine_name: str) -> None:
    """A quiet send posted in this pass has not reached the kernel: a second
    send of its stream hands it over at once instead of waiting a pass, and
    the bytes keep their order."""
    engine = ring_engine(engine_name)
    engine.budget = ScheduleBudget("budget", 60.0)  # no yield between the sends below
    listener, client, server = await open_pair()
    before, passes = quiet_posted(), engine.load.passes
    for letter in b"ABC":
        await client.send(bytes([letter]) * 1000)
    assert engine.load.passes == passes, "a send waited a pass for the quiet one before it"
    assert quiet_posted() == before + 3
    assert await recv_exactly(server, 3000) == b"A" * 1000 + b"B" * 1000 + b"C" * 1000
    stats = anyio_iocp.statistics()
    assert stats.in_flight.get("send_quiet", 0) == 0
    # the completions that the C reaper counted are reaped completions too
    assert stats.completions >= sum(stats.completed.values())
    await client.aclose()
    await server.aclose()
    await listener.aclose()


async def test_auto_a_stream_that_sends_several_times_a_pass_sends_directly(
    engine_name: str,
) -> None:
    """Under "auto", a stream that sent more than once in this pass or the
    last one streams: its sends go directly (a quiet one would make the next
    send of the pass wait for it), and a pass with one send makes it quiet again."""
    if engine_name != "io_uring":
        pytest.skip("quiet sends are the io_uring engine's")
    engine: Any = current_engine()
    engine.set_send_mode("auto")
    engine.budget = ScheduleBudget("budget", 60.0)  # no yield between one pass's sends
    listener, client, server = await open_pair()
    for _ in range(QUIET_AFTER):  # a new stream's direct sends, several in this pass
        await client.send(b"w")
    sent = bytearray(b"w" * QUIET_AFTER)

    async def one_pass(sends: int) -> int:
        """Quiet sends among ``sends`` sends made in the next pass."""
        passes = engine.load.passes
        await anyio.lowlevel.checkpoint()
        assert engine.load.passes == passes + 1
        engine.quiet_now = True  # as a window of many sending streams decides
        before = quiet_posted()
        for i in range(sends):
            data = bytes([ord("a") + len(sent) % 26]) * (i + 1)
            await client.send(data)
            sent.extend(data)
        assert engine.load.passes == passes + 1, "the sends took more than one pass"
        return quiet_posted() - before

    # after a pass of several sends: direct; a pass of one: quiet; of three: the
    # first quiet, the rest direct (the second hands the first to the kernel)
    assert [await one_pass(n) for n in (1, 1, 3, 1, 1)] == [0, 1, 1, 0, 1]
    assert await recv_exactly(server, len(sent)) == bytes(sent)
    await client.aclose()
    await server.aclose()
    await listener.aclose()


async def test_a_failure_found_by_the_second_send_of_a_pass_stops_it(engine_name: str) -> None:
    """A second send that hands its stream's quiet send to the kernel at once
    and finds it failed raises, and sends nothing behind the failure."""
    engine = ring_engine(engine_name)
    engine.budget = ScheduleBudget("budget", 60.0)  # both sends in one pass
    stream, peer, _ = await peer_pair()
    peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    peer.sock.close()  # a reset: the stream's next send fails
    await anyio.sleep(0.05)
    before, passes = quiet_posted(), engine.load.passes
    await stream.send(b"first")  # quiet: its failure is not known yet
    with pytest.raises(anyio.BrokenResourceError):
        await stream.send(b"second")
    assert engine.load.passes == passes, "the second send did not find the failure at once"
    assert quiet_posted() == before + 1, "a send went out behind the failed one"
    await stream.aclose()
