"""Engine correctness: memory lent to the kernel, cancellation, closing, leaks."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
from typing import Any

import anyio
import pytest
from anyio import ClosedResourceError
from anyio.abc import SocketAttribute, SocketStream
from helpers import first_listener, open_pair

from anyio_iocp import TuningAttribute
from anyio_iocp._runstate import current_engine

pytestmark = pytest.mark.anyio


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def ops_in_flight() -> dict[int, Any]:
    engine = current_engine()
    return dict(getattr(engine, "_ops", {}))


async def test_cancelled_receive_loses_no_data() -> None:
    """Bytes that land after a receive was cancelled go to the next receive."""
    listener, client, server = await open_pair()
    async with listener, client, server:
        for round_ in range(20):
            with anyio.move_on_after(0.001):
                await server.receive()
                pytest.fail("nothing was sent yet")
            message = b"message %d" % round_
            await client.send(message)
            received = b""
            while len(received) < len(message):
                received += await server.receive()
            assert received == message


async def test_cancel_after_data_arrived_keeps_it() -> None:
    """The receive completes in the kernel, but the task is cancelled before it
    runs: the bytes must still reach the next receive."""
    listener, client, server = await open_pair()
    async with listener, client, server:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def send_then_cancel() -> None:
                    await client.send(b"precious")
                    await anyio.sleep(0.05)  # the completion is reaped by now
                    scope.cancel()

                tg.start_soon(send_then_cancel)
                await anyio.sleep(10)
        assert scope.cancelled_caught
        assert await server.receive() == b"precious"


async def test_posted_receive_keeps_its_buffer_until_completion(engine_name: str) -> None:
    if engine_name != "io_uring":
        pytest.skip("the readiness engine lends no memory to the kernel")
    listener, client, server = await open_pair()
    async with listener, client:
        with anyio.move_on_after(0.01):
            await server.receive()
        inflight = [op for op in ops_in_flight().values() if op.keep is not None]
        assert len(inflight) == 1, "the cancelled receive stays posted"
        op = inflight[0]
        assert not op.done
        gc.collect()
        assert op.keep is not None  # its buffer is still referenced by the op
        await server.aclose()  # cancels the receive and waits for its completion
        assert op.done
        assert op.user_data not in ops_in_flight()


async def test_cancelled_send_then_next_send_in_order() -> None:
    """Cancel a send that the peer is not reading; what arrives is a prefix of
    the cancelled data followed by exactly the next send."""
    first = os.urandom(16 << 20)
    second = b"the next send" * 1000
    listener, client, server = await open_pair()
    async with listener, client, server:
        with anyio.move_on_after(0.2) as scope:
            await client.send(first)
        assert scope.cancelled_caught, "the peer reads nothing: the send must block"
        received = bytearray()

        async def drain() -> None:
            while True:
                try:
                    received.extend(await server.receive())
                except anyio.EndOfStream:
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(drain)
            await client.send(second)
            await client.send_eof()
        assert received.endswith(second)
        prefix = bytes(received[: len(received) - len(second)])
        assert 0 < len(prefix) < len(first)
        assert prefix == first[: len(prefix)]


async def test_cancelled_accept_loses_no_connection() -> None:
    listener = first_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    port = listener.extra(SocketAttribute.local_port)
    async with listener:
        for _ in range(5):
            with anyio.move_on_after(0.01):
                await listener.accept()
                pytest.fail("nobody connected yet")
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await client.send(b"hi")
                with anyio.fail_after(5):
                    async with await listener.accept() as server:
                        assert await server.receive() == b"hi"


async def test_close_listener_while_accepting() -> None:
    listener = first_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    errors: list[BaseException] = []

    async def acceptor() -> None:
        try:
            await listener.accept()
        except BaseException as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(acceptor)
        await anyio.wait_all_tasks_blocked()
        await listener.aclose()
    assert len(errors) == 1
    assert isinstance(errors[0], ClosedResourceError)
    assert not [op for op in ops_in_flight().values() if not op.done]


async def test_close_with_send_in_flight_peer_sees_close() -> None:
    listener, client, server = await open_pair()
    async with listener, server:
        errors: list[BaseException] = []

        async def sender() -> None:
            try:
                await client.send(b"z" * (32 << 20))
            except BaseException as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sender)
            await anyio.sleep(0.1)
            await client.aclose()
        assert len(errors) == 1
        assert isinstance(errors[0], ClosedResourceError)
        total = 0
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            while True:
                total += len(await server.receive())
        assert total < 32 << 20
    assert not [op for op in ops_in_flight().values() if not op.done]


async def test_no_leaks_after_10000_cycles() -> None:
    """10,000 connect/exchange/close cycles leave no descriptor and no op behind."""

    async def handler(stream: SocketStream) -> None:
        async with stream:
            data = await stream.receive()
            await stream.send(data + b" back")
            with contextlib.suppress(anyio.EndOfStream):
                await stream.receive()

    multi = await anyio.create_tcp_listener(local_host="127.0.0.1", backlog=1024)
    port = first_listener(multi).extra(SocketAttribute.local_port)
    async with multi, anyio.create_task_group() as tg:
        tg.start_soon(multi.serve, handler)

        async def cycles(n: int) -> None:
            for _ in range(n):
                async with await anyio.connect_tcp("127.0.0.1", port) as client:
                    await client.send(b"hello")
                    assert await client.receive() == b"hello back"

        await cycles(50)  # warm up: the engine's ring, the reaper task
        await anyio.wait_all_tasks_blocked()
        gc.collect()
        fds_before, ops_before = open_fds(), len(ops_in_flight())
        async with anyio.create_task_group() as clients:
            for _ in range(10):
                clients.start_soon(cycles, 1000)
        await anyio.wait_all_tasks_blocked()
        gc.collect()
        assert open_fds() == fds_before
        assert len(ops_in_flight()) == ops_before
        tg.cancel_scope.cancel()


def test_run_ends_with_operations_pending(engine_name: str) -> None:
    """Returning from anyio.run with streams open and operations posted: all
    cancelled and drained, the ring closed, no descriptor left behind."""
    gc.collect()
    fds_before = open_fds()

    async def main() -> tuple[int, int]:
        listener, client, server = await open_pair()
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.receive)  # a receive stays posted
            tg.start_soon(listener.accept)  # the accept pool stays posted
            tg.start_soon(client.send, b"x" * (64 << 20))  # a send nobody reads
            await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        keep.extend([listener, client, server])
        return len(ops_in_flight()), listener.extra(TuningAttribute.backlog).cap

    keep: list[Any] = []
    in_flight, backlog = anyio.run(main, backend="iocp", backend_options={"engine": engine_name})
    if engine_name == "io_uring":
        # the receive and the whole accept pool were still posted; the
        # cancelled send was cancelled in the kernel and awaited before its
        # task finished
        assert in_flight == 1 + backlog
    for resource in keep:
        resource._raw_socket.close()
    keep.clear()
    gc.collect()
    assert open_fds() == fds_before


def test_listener_socket_is_a_real_socket(engine_name: str) -> None:
    async def main() -> socket.AddressFamily:
        multi = await anyio.create_tcp_listener(local_host="::1")
        async with multi:
            return first_listener(multi).extra(SocketAttribute.family)

    family = anyio.run(main, backend="iocp", backend_options={"engine": engine_name})
    assert family == socket.AF_INET6
