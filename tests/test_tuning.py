"""The flow-control settings: backlog, sendcap, recvburst, buffersize, profiles."""

from __future__ import annotations

import contextlib
import errno
import random
import socket
import ssl
from typing import Any

import anyio
import pytest
import trustme
from anyio import BrokenResourceError
from anyio.abc import SocketAttribute, SocketListener, SocketStream
from helpers import first_listener, poll_until, recv_exactly

import anyio_iocp
from anyio_iocp import PROFILES, TuningAttribute, Usage

pytestmark = pytest.mark.anyio


async def tuned_pair(
    listener_settings: dict[str, Any] | None = None, **client_settings: Any
) -> tuple[SocketListener, SocketStream, SocketStream]:
    multi = await anyio_iocp.create_tcp_listener(
        local_host="127.0.0.1", **(listener_settings or {})
    )
    listener = first_listener(multi)
    port = listener.extra(SocketAttribute.local_port)
    client = await anyio_iocp.connect_tcp("127.0.0.1", port, **client_settings)
    server = await listener.accept()
    return listener, client, server


# -- validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"sendcap": 0}, ValueError, "sendcap must be from 1 to 1024, got 0"),
        ({"recvburst": -1}, ValueError, "recvburst must be from 1 to 1024, got -1"),
        ({"backlog": 70000}, ValueError, "backlog must be from 1 to 65535, got 70000"),
        ({"buffersize": 1 << 30}, ValueError, "buffersize must be from 1 to 16777216"),
        ({"sendcap": "4"}, TypeError, "sendcap must be an integer from 1 to 1024, not str"),
        ({"recvburst": True}, TypeError, "recvburst must be an integer from 1 to 1024, not bool"),
        ({"sendcap": 2.0}, TypeError, "sendcap must be an integer from 1 to 1024, not float"),
        ({"sndcap": 4}, ValueError, "unknown (setting|backend option) 'sndcap': expected one of"),
        ({"profile": "nginx"}, ValueError, "unknown profile 'nginx': expected one of 'default'"),
    ],
)
def test_bad_settings_are_clear_errors(
    settings: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message), anyio_iocp.tuning(**settings):
        pass
    with pytest.raises(error, match=message):
        anyio.run(lambda: anyio.sleep(0), backend="iocp", backend_options=settings)


async def test_backlog_is_not_a_stream_setting() -> None:
    listener, client, server = await tuned_pair()
    async with listener, client, server:
        with pytest.raises(ValueError, match=r"'backlog' is not a setting of a stream"):
            anyio_iocp.configure(client, backlog=5)
        with pytest.raises(TypeError, match="backlog is a listener setting"):
            await anyio_iocp.connect_tcp("127.0.0.1", 1, backlog=5)


async def test_bad_configure_changes_nothing() -> None:
    listener, client, server = await tuned_pair(sendcap=3, recvburst=2)
    async with listener, client, server:
        with pytest.raises(ValueError, match="recvburst must be from 1 to 1024"):
            anyio_iocp.configure(client, sendcap=7, recvburst=0)
        assert client.extra(TuningAttribute.sendcap).cap == 3
        assert client.extra(TuningAttribute.recvburst).cap == 2
        with pytest.raises(TypeError, match="not a stream or listener of the iocp backend"):
            anyio_iocp.configure(anyio.create_memory_object_stream[int]()[0], sendcap=2)


# -- where values come from ---------------------------------------------------


def test_profiles_are_iocpsocks() -> None:
    assert (PROFILES["ftpd"].backlog, PROFILES["ftpd"].sendcap, PROFILES["ftpd"].recvburst) == (
        10,
        20,
        20,
    )
    assert (
        PROFILES["httpd"].backlog,
        PROFILES["httpd"].sendcap,
        PROFILES["httpd"].recvburst,
    ) == (500, 1, 1)


def test_run_options_scopes_and_calls_combine(engine_name: str) -> None:
    async def main() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
        listener = first_listener(multi)
        port = listener.extra(SocketAttribute.local_port)
        seen["run"] = (
            listener.extra(TuningAttribute.backlog).cap,
            listener.extra(TuningAttribute.sendcap).cap,
        )
        with anyio_iocp.tuning(profile="httpd", recvburst=3):
            plain = await anyio.connect_tcp("127.0.0.1", port)
            seen["scope"] = (
                plain.extra(TuningAttribute.sendcap).cap,
                plain.extra(TuningAttribute.recvburst).cap,
            )
            with anyio_iocp.tuning(sendcap=5):
                inner = await anyio.connect_tcp("127.0.0.1", port)
                seen["inner"] = (
                    inner.extra(TuningAttribute.sendcap).cap,
                    inner.extra(TuningAttribute.recvburst).cap,
                )
            explicit = await anyio_iocp.connect_tcp("127.0.0.1", port, sendcap=9, buffersize=1000)
            seen["call"] = (
                explicit.extra(TuningAttribute.sendcap).cap,
                explicit.extra(TuningAttribute.buffersize).cap,
            )
        accepted = [await listener.accept() for _ in range(3)]
        seen["accepted"] = accepted[0].extra(TuningAttribute.sendcap).cap
        for stream in (plain, inner, explicit, *accepted):
            await stream.aclose()
        await multi.aclose()
        return seen

    seen = anyio.run(
        main, backend="iocp", backend_options={"engine": engine_name, "profile": "ftpd"}
    )
    assert seen == {
        "run": (10, 20),  # ftpd from backend_options
        "scope": (1, 3),  # httpd profile in the scope, recvburst given there
        "inner": (5, 3),  # the inner scope overrides one setting
        "call": (9, 1000),  # explicit keywords win
        "accepted": 20,  # accepted streams take the listener's defaults
    }


async def test_tls_keywords_pass_through() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    tcp = first_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    port = tcp.extra(SocketAttribute.local_port)
    from anyio.streams.tls import TLSListener

    listener = TLSListener(tcp, server_context, standard_compatible=False)

    async def handler(stream: Any) -> None:
        async with stream:
            await stream.send(await stream.receive())

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        async with await anyio_iocp.connect_tcp(
            "localhost", port, sendcap=4, ssl_context=client_context, tls_standard_compatible=False
        ) as client:
            assert client.extra(TuningAttribute.sendcap) == Usage(4, 0)
            anyio_iocp.configure(client, sendcap=6)  # looked up through the TLS layer
            assert client.extra(TuningAttribute.sendcap).cap == 6
            await client.send(b"through tls")
            assert await client.receive() == b"through tls"
        tg.cancel_scope.cancel()


# -- sendcap ------------------------------------------------------------------


async def test_sendcap_returns_early_then_waits_for_the_oldest() -> None:
    listener, client, server = await tuned_pair(sendcap=4)
    async with listener, client, server:
        chunk = b"s" * (4 << 20)  # far more than the socket buffers hold
        returned = 0
        with anyio.move_on_after(1):
            for _ in range(10):
                await client.send(chunk)
                returned += 1
        # the first sends were handed over and returned; then send() waited
        assert 1 <= returned <= 5
        usage = client.extra(TuningAttribute.sendcap)
        assert usage.cap == 4
        assert 1 <= usage.in_use <= 4
        got = 0
        while got < returned * len(chunk):
            got += len(await server.receive())
        assert got == returned * len(chunk)


async def test_sendcap_and_recvburst_keep_order_under_random_sizes() -> None:
    rng = random.Random(20)
    payload = rng.randbytes(6_000_000)
    listener, client, server = await tuned_pair(
        {"sendcap": 20, "recvburst": 20, "buffersize": 4096}, sendcap=20, recvburst=20
    )
    async with listener, client, server:
        received = bytearray()

        async def reader() -> None:
            while len(received) < len(payload):
                received.extend(await server.receive(rng.randint(1, 70_000)))
                if rng.random() < 0.01:
                    await anyio.sleep(0.001)

        buf = bytearray()
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            pos = 0
            while pos < len(payload):
                size = rng.choice((1, 10, 1000, 4096, 65536, 300_000))
                # a mutable buffer, reused at once: the data must have been taken
                buf[:] = payload[pos : pos + size]
                await client.send(buf)  # type: ignore[arg-type]  # any buffer works
                buf[:] = b"X" * len(buf)
                pos += size
        assert bytes(received) == payload


async def test_close_waits_for_sends_in_flight() -> None:
    listener, client, server = await tuned_pair(sendcap=8)
    async with listener, server:
        received = bytearray()
        start_reading = anyio.Event()

        async def reader() -> None:
            await start_reading.wait()
            try:
                while True:
                    received.extend(await server.receive())
            except anyio.EndOfStream:
                pass

        sent = bytearray()
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            # fill the socket buffers until sends are left pending
            while client.extra(TuningAttribute.sendcap).in_use < 3:
                chunk = bytes([len(sent) % 251]) * 100_000
                await client.send(chunk)
                sent += chunk
            start_reading.set()
            await client.aclose()  # waits for the pending sends to go out
        assert bytes(received) == bytes(sent)


async def test_write_behind_error_surfaces_on_next_operation() -> None:
    listener, client, server = await tuned_pair(sendcap=16)
    async with listener, client:
        raw = server.extra(SocketAttribute.raw_socket)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        await server.aclose()  # reset
        with pytest.raises(BrokenResourceError) as info:
            for _ in range(200):
                await client.send(b"w" * 65536)
                await anyio.sleep(0.001)
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(BrokenResourceError):
            await client.send(b"more")


async def test_send_eof_after_write_behind() -> None:
    listener, client, server = await tuned_pair(sendcap=8)
    async with listener, client, server:
        data = b"e" * 3_000_000
        await client.send(data)
        await client.send_eof()
        assert await recv_exactly(server, len(data)) == data
        with pytest.raises(anyio.EndOfStream):
            await server.receive()


# -- recvburst (Automatic Burst Detection) ------------------------------------


async def test_recvburst_grows_under_a_burst_and_shrinks_after() -> None:
    listener, client, server = await tuned_pair({"recvburst": 8, "buffersize": 16384})
    async with listener, client, server:
        assert server.extra(TuningAttribute.recvburst) == Usage(8, 0)
        seen = []
        payload = b"b" * (16 << 20)

        async def burst() -> None:
            await client.send(payload)

        async with anyio.create_task_group() as tg:
            tg.start_soon(burst)
            got = 0
            while got < len(payload):
                got += len(await server.receive(16384))
                seen.append(server.extra(TuningAttribute.recvburst).in_use)
                # bytes held ahead of the reader stay within k * buffersize
                assert server.extra(TuningAttribute.buffersize).in_use <= 8 * 16384
        assert max(seen) >= 4, "k grew during the burst"
        assert max(seen) <= 8, "never above the cap"
        # small, sparse messages: k shrinks back
        for i in range(12):
            await client.send(b"small %d" % i)
            await server.receive()
        assert server.extra(TuningAttribute.recvburst).in_use <= 1


@pytest.mark.parametrize("buffersize", [1, 7, 4096])
async def test_small_buffers_work(buffersize: int) -> None:
    listener, client, server = await tuned_pair({"buffersize": buffersize, "recvburst": 4})
    async with listener, client, server:
        data = bytes(range(256)) * 40
        await client.send(data)
        received = b""
        while len(received) < len(data):
            chunk = await server.receive()
            assert len(chunk) <= buffersize
            received += chunk
        assert received == data


# -- backlog ------------------------------------------------------------------


async def test_backlog_pool_is_bounded_and_refilled() -> None:
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=4)
    listener = first_listener(multi)
    port = listener.extra(SocketAttribute.local_port)
    clients = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(10)]
    try:
        first = await listener.accept()
        # the pool refilled: its new accepts complete
        await poll_until(lambda: listener.extra(TuningAttribute.backlog).in_use >= 4)
        assert listener.extra(TuningAttribute.backlog) == Usage(4, 4)
        accepted = [first]
        for _ in range(9):
            with anyio.fail_after(5):
                accepted.append(await listener.accept())
        assert listener.extra(TuningAttribute.backlog).in_use == 0
        # every connection arrived, none twice
        ports = {s.extra(SocketAttribute.remote_port) for s in accepted}
        assert ports == {c.extra(SocketAttribute.local_port) for c in clients}
        anyio_iocp.configure(multi, backlog=2)
        assert listener.extra(TuningAttribute.backlog).cap == 2
        for stream in accepted:
            await stream.aclose()
    finally:
        for client in clients:
            await client.aclose()
        await multi.aclose()


async def test_close_wakes_a_sender_waiting_for_room() -> None:
    """aclose() from another task while send() waits for room: the pending sends
    go out, and the waiting sender gets ClosedResourceError instead of hanging."""
    server_sock = socket.create_server(("127.0.0.1", 0))
    client = await anyio_iocp.connect_tcp("127.0.0.1", server_sock.getsockname()[1], sendcap=2)
    peer, _ = server_sock.accept()
    peer.setblocking(False)
    chunk = b"x" * (8 << 20)
    outcome: list[str] = []
    received = 0

    async def sender() -> None:
        with anyio.move_on_after(10):
            try:
                for _ in range(4):
                    await client.send(chunk)
                outcome.append("returned")
            except anyio.ClosedResourceError:
                outcome.append("closed")
            return
        outcome.append("hung")

    async def reader() -> None:
        nonlocal received
        await anyio.sleep(0.3)
        while True:
            try:
                data = peer.recv(1 << 20)
            except BlockingIOError:
                await anyio.sleep(0.005)
                continue
            if not data:
                return
            received += len(data)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sender)
        await anyio.sleep(0.2)  # the sender now waits for room
        tg.start_soon(reader)
        await client.aclose()
    peer.close()
    server_sock.close()
    assert outcome == ["closed"]
    assert received % len(chunk) == 0 and received >= 2 * len(chunk)


async def test_sendcap_back_to_one_sends_in_full() -> None:
    """After configure(sendcap=1) with write-behind pending, send() again
    returns only once its bytes are in the kernel: with a peer that reads the
    earlier data and then stops, a big send must block, not return."""
    server_sock = socket.socket()
    # A fixed receive buffer for the peer (inherited by the accepted socket):
    # with autotuning it may grow to tcp_rmem's maximum (32 MiB on these
    # machines) once the peer has read the first 16 MiB, and the 32 MiB send
    # below could then fit in the kernel's buffers without blocking.
    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    server_sock.bind(("127.0.0.1", 0))
    server_sock.listen()
    client = await anyio_iocp.connect_tcp("127.0.0.1", server_sock.getsockname()[1], sendcap=4)
    peer, _ = server_sock.accept()
    assert peer.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) <= 2 << 20
    first = 16 << 20
    await client.send(b"x" * first)  # fills the buffers; the rest is write-behind
    assert client.extra(TuningAttribute.sendcap).in_use == 1
    anyio_iocp.configure(client, sendcap=1)

    def read_first() -> None:
        left = first
        while left:
            left -= len(peer.recv(min(left, 1 << 20)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, read_first)
        with anyio.move_on_after(2) as scope:
            await client.send(b"y" * (32 << 20))
        assert scope.cancelled_caught, "send() returned with bytes still pending"
    await client.aclose()
    peer.close()
    server_sock.close()


async def test_write_behind_that_cannot_be_posted_breaks_the_stream(engine_name: str) -> None:
    """If queued sends cannot be handed to the kernel, the stream is broken and
    says so: no later byte may go out after a hole."""
    if engine_name != "io_uring":
        pytest.skip("io_uring submission")
    from anyio_iocp._face.runstate import current_engine

    engine: Any = current_engine()
    listener, client, server = await tuned_pair(sendcap=8)
    async with listener, client, server:
        real_post = engine.post_send_chain
        failures: list[bool] = []

        def refuse_once(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("pipelined") and not failures:
                failures.append(True)
                raise OSError(errno.EBUSY, "submission refused")
            return real_post(*args, **kwargs)

        engine.post_send_chain = refuse_once
        try:
            with pytest.raises(BrokenResourceError):
                for _ in range(50):
                    await client.send(b"y" * (1 << 20))
                    await anyio.sleep(0)
            assert failures
            with pytest.raises(BrokenResourceError):
                await client.send(b"Z")
        finally:
            engine.post_send_chain = real_post
        # what the peer got is a prefix of the y's, never a Z after a hole
        await client.aclose()
        received = b""
        with contextlib.suppress(anyio.EndOfStream, BrokenResourceError):
            while True:
                received += await server.receive()
        assert set(received) <= {ord("y")}
