"""UDP and UNIX datagram sockets through the engines (io_uring and readiness on
Linux; iocp and readiness on Windows, run under Wine here)."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import BrokenResourceError, ClosedResourceError, get_cancelled_exc_class
from anyio.abc import SocketAttribute, UDPSocket
from helpers import under_wine

from anyio_iocp import TuningAttribute
from anyio_iocp._face.runstate import current_engine
from anyio_iocp._streams.datagrams import (
    EngineConnectedUDPSocket,
    EngineConnectedUNIXDatagramSocket,
    EngineUDPSocket,
    EngineUNIXDatagramSocket,
)

pytestmark = pytest.mark.anyio

#: UNIX datagram sockets (AF_UNIX, SOCK_DGRAM) do not exist on Windows
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="no UNIX datagram sockets")

HOSTS = ["127.0.0.1", "::1"]
#: the MessageIO class each engine gives a UDP socket
MESSAGE_IO = {
    "io_uring": "UringMessageIO",
    "iocp": "IocpMessageIO",
    "readiness": "ReadinessMessageIO",
}
#: the largest UDP payload over IPv4 (65535 - 20 IP - 8 UDP header bytes)
MAX_UDP4 = 65507


def ops_in_flight() -> int:
    return len(getattr(current_engine(), "_ops", {}))


def message_io(sock: Any) -> Any:
    return sock._io


async def wait_until_posted(sock: Any, engine_name: str) -> None:
    """Let a receiver block; on a completion engine, check its receive is posted."""
    await anyio.wait_all_tasks_blocked()
    if engine_name in ("io_uring", "iocp"):
        assert len(message_io(sock)._in_flight) == 1, "the receive waits for its completion"


def through_the_port(engine_name: str, *socks: Any) -> None:
    """On iocp, no direct try first: every receive and send is posted
    (WSARecvFrom, WSASendTo / WSASend) and ends with its completion packet."""
    if engine_name == "iocp":
        for sock in socks:
            message_io(sock).direct_first = False


#: each test runs with the direct calls first (the default) and, on Windows
#: (the iocp engine), with every operation through the completion port
direct_or_posted = pytest.mark.parametrize(
    "direct",
    [pytest.param(True, id="direct"), pytest.param(False, id="posted")][
        : 2 if sys.platform == "win32" else 1
    ],
)


@contextlib.asynccontextmanager
async def udp_pair(
    host: str, engine_name: str, direct: bool = True
) -> AsyncIterator[tuple[UDPSocket, UDPSocket]]:
    """Two UDP sockets on ``host``; with ``direct`` false, through the port."""
    if not direct and engine_name != "iocp":
        pytest.skip("only the iocp engine has a switch for the direct calls")
    async with (
        await anyio.create_udp_socket(local_host=host) as a,
        await anyio.create_udp_socket(local_host=host) as b,
    ):
        if not direct:
            through_the_port(engine_name, a, b)
        yield a, b


@pytest.mark.parametrize("host", HOSTS)
async def test_udp_messages_go_through_the_engines_own_io(host: str, engine_name: str) -> None:
    async with (
        await anyio.create_udp_socket(local_host=host) as a,
        await anyio.create_connected_udp_socket(host, 9, local_host=host) as b,
    ):
        for udp in (a, b):
            assert type(message_io(udp)).__name__ == MESSAGE_IO[engine_name]
            assert udp.extra(TuningAttribute.engine).name == engine_name
            if engine_name == "iocp":  # on Trio's completion port under the engine's key
                raw = udp.extra(SocketAttribute.raw_socket)
                assert current_engine()._associated.get(raw.fileno()) is raw  # type: ignore[attr-defined]


@direct_or_posted
@pytest.mark.parametrize("host", HOSTS)
async def test_udp_both_directions_with_addresses(
    host: str, direct: bool, engine_name: str
) -> None:
    async with udp_pair(host, engine_name, direct) as (a, b):
        assert isinstance(a, EngineUDPSocket)
        assert a.extra(TuningAttribute.engine).name == engine_name
        a_port = a.extra(SocketAttribute.local_port)
        b_port = b.extra(SocketAttribute.local_port)
        await a.sendto(b"ping", host, b_port)
        assert await b.receive() == (b"ping", (host, a_port))
        await b.send((b"pong", (host, a_port)))
        assert await a.receive() == (b"pong", (host, b_port))


@direct_or_posted
@pytest.mark.parametrize("host", HOSTS)
async def test_connected_udp(host: str, direct: bool, engine_name: str) -> None:
    async with udp_pair(host, engine_name, direct) as (server, _unused):
        port = server.extra(SocketAttribute.local_port)
        async with await anyio.create_connected_udp_socket(host, port, local_host=host) as client:
            if not direct:
                through_the_port(engine_name, client)
            assert isinstance(client, EngineConnectedUDPSocket)
            assert client.extra(SocketAttribute.remote_port) == port
            await client.send(b"hello")
            data, address = await server.receive()
            assert data == b"hello"
            await server.send((b"hello back", address))
            assert await client.receive() == b"hello back"


@pytest.mark.parametrize("host", HOSTS)
async def test_receive_waits_then_gets_the_datagram(host: str, engine_name: str) -> None:
    async with (
        await anyio.create_udp_socket(local_host=host) as a,
        await anyio.create_udp_socket(local_host=host) as b,
    ):
        port = b.extra(SocketAttribute.local_port)
        received: list[tuple[bytes, tuple[str, int]]] = []

        async def receiver() -> None:
            received.append(await b.receive())

        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver)
            await wait_until_posted(b, engine_name)
            await a.sendto(b"late", host, port)
        assert received == [(b"late", (host, a.extra(SocketAttribute.local_port)))]
        assert not message_io(b).__dict__.get("_in_flight")


@direct_or_posted
async def test_many_datagrams_of_random_sizes_arrive_intact(direct: bool, engine_name: str) -> None:
    rng = random.Random(5)
    payloads = [rng.randbytes(rng.randrange(0, 9000)) for _ in range(300)]
    async with udp_pair("127.0.0.1", engine_name, direct) as (a, b):
        port = b.extra(SocketAttribute.local_port)
        b.extra(SocketAttribute.raw_socket).setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        got: list[bytes] = []

        async def receiver() -> None:
            for _ in payloads:
                got.append((await b.receive())[0])

        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver)
            for i, payload in enumerate(payloads):
                await a.sendto(payload, "127.0.0.1", port)
                if i % 10 == 0:
                    await anyio.wait_all_tasks_blocked()  # let the receiver wait on the ring
        assert got == payloads  # loopback keeps datagrams whole and in order


async def test_cancelled_receive_loses_no_datagram(engine_name: str) -> None:
    async with (
        await anyio.create_udp_socket(local_host="127.0.0.1") as a,
        await anyio.create_udp_socket(local_host="127.0.0.1") as b,
    ):
        port = b.extra(SocketAttribute.local_port)
        for round_ in range(50):
            got: list[bytes] = []

            async def receiver(got: list[bytes] = got) -> None:
                got.append((await b.receive())[0])

            async with anyio.create_task_group() as tg:
                tg.start_soon(receiver)
                await wait_until_posted(b, engine_name)
                # the datagram and the cancellation race within one pass
                await a.sendto(b"d%d" % round_, "127.0.0.1", port)
                tg.cancel_scope.cancel()
            if not got:
                with anyio.fail_after(5):
                    got.append((await b.receive())[0])
            assert got == [b"d%d" % round_]
        assert ops_in_flight() == 0


@direct_or_posted
async def test_cancelled_receive_then_the_next_receive_gets_the_datagram(
    direct: bool, engine_name: str
) -> None:
    async with udp_pair("127.0.0.1", engine_name, direct) as (a, b):
        port = b.extra(SocketAttribute.local_port)
        for round_ in range(5):
            outcome: list[object] = []

            async def receiver(outcome: list[object] = outcome) -> None:
                try:
                    outcome.append(await b.receive())
                except get_cancelled_exc_class():
                    outcome.append("cancelled")
                    raise

            async with anyio.create_task_group() as tg:
                tg.start_soon(receiver)
                await wait_until_posted(b, engine_name)
                tg.cancel_scope.cancel()
            assert outcome == ["cancelled"]
            # the posted receive was cancelled in the kernel and its packet drained
            assert ops_in_flight() == 0
            assert not message_io(b).__dict__.get("_in_flight")
            await a.sendto(b"after %d" % round_, "127.0.0.1", port)
            with anyio.fail_after(5):
                assert (await b.receive())[0] == b"after %d" % round_


@direct_or_posted
@pytest.mark.parametrize("host", HOSTS)
async def test_largest_datagram_both_ways(host: str, direct: bool, engine_name: str) -> None:
    payload = random.Random(7).randbytes(MAX_UDP4)
    async with udp_pair(host, engine_name, direct) as (a, b):
        for sock in (a, b):
            raw = sock.extra(SocketAttribute.raw_socket)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        received: list[bytes] = []

        async def receiver() -> None:
            received.append((await b.receive())[0])

        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver)
            await wait_until_posted(b, engine_name)
            await a.sendto(payload, host, b.extra(SocketAttribute.local_port))
        assert received == [payload]
        await b.sendto(payload[::-1], host, a.extra(SocketAttribute.local_port))
        with anyio.fail_after(5):
            assert (await a.receive())[0] == payload[::-1]


@direct_or_posted
async def test_datagram_too_large_to_send_is_broken(direct: bool, engine_name: str) -> None:
    async with udp_pair("127.0.0.1", engine_name, direct) as (a, _b):
        with pytest.raises(BrokenResourceError) as info:
            await a.sendto(b"x" * (MAX_UDP4 + 1), "127.0.0.1", a.extra(SocketAttribute.local_port))
        cause = info.value.__cause__
        assert isinstance(cause, OSError)
        if sys.platform == "win32":
            assert cause.winerror == 10040  # type: ignore[attr-defined]  # WSAEMSGSIZE
        else:
            assert cause.errno == errno.EMSGSIZE


@direct_or_posted
async def test_datagram_larger_than_the_buffer(direct: bool, engine_name: str) -> None:
    async with udp_pair("127.0.0.1", engine_name, direct) as (a, b):
        io = message_io(b)
        await a.sendto(b"0123456789" * 10, "127.0.0.1", b.extra(SocketAttribute.local_port))
        await a.sendto(b"next", "127.0.0.1", b.extra(SocketAttribute.local_port))
        with anyio.fail_after(5):
            if sys.platform == "win32":
                # Windows fails the receive with WSAEMSGSIZE (recvfrom and WSARecvFrom alike)
                with pytest.raises(OSError) as info:
                    await io.receive_msg(10, 0)
                assert info.value.winerror == 10040  # type: ignore[attr-defined]
            else:
                # Linux truncates and says so in the flags
                data, _anc, flags, _address = await io.receive_msg(10, 0)
                assert (data, flags & socket.MSG_TRUNC) == (b"0123456789", socket.MSG_TRUNC)
            assert (await io.receive_msg(100, 0))[0] == b"next"


async def test_datagrams_queued_ahead_come_back_in_order(engine_name: str) -> None:
    async with udp_pair("::1", engine_name, direct=engine_name != "iocp") as (a, b):
        b.extra(SocketAttribute.raw_socket).setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        port = b.extra(SocketAttribute.local_port)
        payloads = [b"%05d" % i + b"." * (i % 1400) for i in range(400)]
        for payload in payloads:
            await a.sendto(payload, "::1", port)
        with anyio.fail_after(20):
            got = [(await b.receive())[0] for _ in payloads]
        assert got == payloads
        assert ops_in_flight() == 0


async def test_name_is_resolved_for_sendto(engine_name: str) -> None:
    async with (
        await anyio.create_udp_socket(local_host="127.0.0.1") as a,
        await anyio.create_udp_socket(local_host="127.0.0.1") as b,
    ):
        await a.sendto(b"by name", "localhost", b.extra(SocketAttribute.local_port))
        assert (await b.receive())[0] == b"by name"


async def test_close_while_receiving(engine_name: str) -> None:
    udp = await anyio.create_udp_socket(local_host="127.0.0.1")
    outcome: list[type[BaseException]] = []

    async def receiver() -> None:
        try:
            await udp.receive()
        except ClosedResourceError as exc:
            outcome.append(type(exc))

    async with anyio.create_task_group() as tg:
        tg.start_soon(receiver)
        await wait_until_posted(udp, engine_name)
        await udp.aclose()
    assert outcome == [ClosedResourceError]
    assert ops_in_flight() == 0
    with pytest.raises(ClosedResourceError):
        await udp.send((b"x", ("127.0.0.1", 9)))


@pytest.mark.skipif(under_wine(), reason="Wine did not report ICMP port unreachable (timed out)")
async def test_connected_udp_to_a_closed_port_is_broken(engine_name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with await anyio.create_connected_udp_socket("127.0.0.1", port) as udp:
        await udp.send(b"anyone?")
        with anyio.fail_after(5), pytest.raises(BrokenResourceError) as info:
            await udp.receive()
        # Linux: ECONNREFUSED; Windows reports it as WSAECONNRESET
        expected = ConnectionResetError if sys.platform == "win32" else ConnectionRefusedError
        assert isinstance(info.value.__cause__, expected)


async def test_wrapped_udp_socket_goes_through_the_engine(engine_name: str) -> None:
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    async with await UDPSocket.from_socket(raw) as udp:
        assert isinstance(udp, EngineUDPSocket)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.sendto(b"raw", raw.getsockname())
            assert (await udp.receive())[0] == b"raw"


@posix_only
async def test_unix_datagrams(tmp_path: Path, engine_name: str) -> None:
    first, second = str(tmp_path / "a"), str(tmp_path / "b")
    async with (
        await anyio.create_unix_datagram_socket(local_path=first) as a,
        await anyio.create_connected_unix_datagram_socket(first, local_path=second) as b,
    ):
        assert isinstance(a, EngineUNIXDatagramSocket)
        assert isinstance(b, EngineConnectedUNIXDatagramSocket)
        got: list[tuple[bytes, str]] = []

        async def receiver() -> None:
            got.append(await a.receive())

        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver)
            await wait_until_posted(a, engine_name)
            await b.send(b"to a")
        assert got == [(b"to a", second)]
        await a.sendto(b"to b", second)
        assert await b.receive() == b"to b"


@posix_only
async def test_unix_datagram_abstract_address(engine_name: str) -> None:
    name = b"\0anyio-iocp-test-%d" % os.getpid()
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    raw.bind(name)
    async with await anyio.abc.UNIXDatagramSocket.from_socket(raw) as a:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as peer:
            peer.bind(name + b"-peer")
            got: list[tuple[bytes, Any]] = []

            async def receiver() -> None:
                got.append(await a.receive())

            async with anyio.create_task_group() as tg:
                tg.start_soon(receiver)
                await wait_until_posted(a, engine_name)
                peer.sendto(b"abstract", name)
            assert got == [(b"abstract", name + b"-peer")]
            await a.send((b"reply", name + b"-peer"))  # type: ignore[arg-type]
            assert peer.recv(100) == b"reply"


@posix_only
async def test_send_waits_for_room_then_delivers_to_the_address(
    tmp_path: Path, engine_name: str
) -> None:
    peer_path, local_path = str(tmp_path / "peer"), str(tmp_path / "local")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as peer:
        peer.bind(peer_path)
        peer.setblocking(False)
        raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        raw.bind(local_path)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1024)
        async with await anyio.abc.UNIXDatagramSocket.from_socket(raw) as udp:
            sent = 0
            with anyio.move_on_after(0.2):  # fill the peer's queue until a send waits
                while True:
                    await udp.send((b"%04d" % sent + b"x" * 500, peer_path))
                    sent += 1
            if engine_name == "io_uring":
                assert ops_in_flight() == 0, "the cancelled send left nothing posted"
            done = anyio.Event()

            async def last_send() -> None:
                await udp.send((b"last", peer_path))
                done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(last_send)
                await anyio.wait_all_tasks_blocked()
                assert not done.is_set()
                if engine_name == "io_uring":
                    assert len(message_io(udp)._in_flight) == 1, "the send waits on the ring"
                received = []
                while not done.is_set():
                    try:
                        received.append(peer.recvfrom(2048))
                    except BlockingIOError:
                        await anyio.sleep(0.001)
            while True:
                try:
                    received.append(peer.recvfrom(2048))
                except BlockingIOError:
                    break
            assert [data for data, _ in received] == [
                b"%04d" % i + b"x" * 500 for i in range(sent)
            ] + [b"last"]
            assert {address for _, address in received} == {local_path}
