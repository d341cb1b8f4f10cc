"""Datagram operations and a listener's first accepts: their owner knows of
them before the kernel has them, or nothing reaches the kernel.

* A datagram socket's receive or send is listed in flight before it is
  posted: a listing that fails (here a ``MemoryError`` injected at the
  set's ``add``) posts nothing, and a send keeps no view of the caller's
  buffer (checked with the traceback kept).  Listed after, the operation
  stayed posted where ``close()`` could not find it; on io_uring it kept
  the socket's file open, so the port stayed bound after ``aclose()``.
* A listener whose pool cannot be posted (its constructor, or the engine's
  list of listeners, fails) withdraws the accepts it posted before it
  fails, and the engine forgets its socket.  On io_uring a posted accept
  keeps the listening socket accepting after its descriptor is closed.

Runs on the io_uring engine on Linux and on the IOCP engine under Wine
(``bash scripts/wine_test.sh tests/test_listed_before_posted.py``); the last
test checks the pool alone, on stand-in accepts.
"""

from __future__ import annotations

import errno
import socket
import sys
from typing import Any

import anyio
import pytest
from anyio._core._eventloop import get_async_backend
from helpers import AddFails, SetItemFails, listener_class, poll_until

import anyio_iocp
from anyio_iocp._face.runstate import current_engine
from anyio_iocp._flow.accept_pool import PostedAcceptPool
from anyio_iocp._interface.settings import Tuning
from anyio_iocp._interface.stats import EngineCounters

pytestmark = pytest.mark.anyio

COMPLETION_ENGINES = ("io_uring", "iocp")


def completion_engine_only(engine_name: str) -> None:
    if engine_name not in COMPLETION_ENGINES:
        pytest.skip("only the completion engines post operations ahead")


def free_to_bind(kind: socket.SocketKind, port: int) -> bool:
    """Whether a new socket of ``kind`` can bind 127.0.0.1:``port``."""
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE or getattr(exc, "winerror", 0) == 10048:
                return False
            raise
    return True


async def assert_unposted_send_lets_go(
    engine: Any, io: Any, address: Any, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send through ``io`` that must be posted, and cannot be listed
    (``where`` "list") or entered in the engine's table ("table"): it
    raises, is neither entered nor listed, and keeps no view of the
    caller's buffer, although the traceback (kept here) holds the frames
    that made the op: the caller's view can be released, its bytearray grow."""
    before = dict(engine._ops)
    buffer = bytearray(b"not sent")
    view = memoryview(buffer)
    if where == "list":
        io._in_flight = AddFails(io._in_flight)
    else:
        monkeypatch.setattr(engine, "_ops", SetItemFails(engine._ops))
    with pytest.raises(MemoryError) as caught:
        await io.send_msg(view, [], address)
    assert dict(engine._ops) == before and not io._in_flight
    view.release()  # (BufferError while the op's view of it is kept)
    buffer.extend(b": no view of it is left")
    assert "could not grow" in str(caught.value)


# -- datagrams ------------------------------------------------------------------


async def test_a_receive_that_cannot_be_listed_posts_nothing(engine_name: str) -> None:
    """The receive fails with the listing, the engine's table is as it was,
    and after ``aclose()`` the port is free: no receive left posted."""
    completion_engine_only(engine_name)
    engine: Any = current_engine()
    udp = await anyio.create_udp_socket(local_host="127.0.0.1")
    port = udp.extra(anyio.abc.SocketAttribute.local_port)
    try:
        before = dict(engine._ops)
        udp._io._in_flight = AddFails(udp._io._in_flight)  # type: ignore[attr-defined]
        with pytest.raises(MemoryError):
            await udp.receive()
        assert dict(engine._ops) == before
    finally:
        await udp.aclose()
    # (a pass, for a cancel the close might have prepared)
    await anyio.sleep(0.01)
    assert free_to_bind(socket.SOCK_DGRAM, port)


async def test_a_receive_that_cannot_be_posted_is_not_listed(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's table refuses the entry: the receive fails, is not left
    listed (``close()`` would wait for a completion that never comes), and
    the next one is posted and gets the datagram."""
    completion_engine_only(engine_name)
    engine: Any = current_engine()
    async with (
        await anyio.create_udp_socket(local_host="127.0.0.1") as udp,
        await anyio.create_udp_socket(local_host="127.0.0.1") as sender,
    ):
        monkeypatch.setattr(engine, "_ops", SetItemFails(engine._ops))
        with pytest.raises(MemoryError):
            await udp.receive()
        in_flight = udp._io._in_flight  # type: ignore[attr-defined]
        left = set(in_flight)
        in_flight.clear()  # (listed and never posted: close() would wait for it forever)
        assert not left
        port = udp.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender.sendto, b"after the failed one", "127.0.0.1", port)
            with anyio.fail_after(5):
                data, _ = await udp.receive()
        assert data == b"after the failed one"
    assert not udp._io._in_flight  # type: ignore[attr-defined]


@pytest.mark.skipif(sys.platform == "win32", reason="no UNIX datagram sockets")
@pytest.mark.parametrize("where", ["list", "table"])
async def test_a_send_that_cannot_be_posted_posts_nothing_and_lets_go_of_the_bytes(
    engine_name: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A send that must be posted (the peer's queue is full) and cannot be
    listed or entered posts nothing and keeps no view of the caller's buffer: the
    bytearray can grow again.  Then a send that can be posted goes out once
    the peer reads."""
    if engine_name != "io_uring":
        pytest.skip("the io_uring engine's UNIX datagrams")
    engine: Any = current_engine()
    mine, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with peer:
        mine.setblocking(False)
        sent = 0
        while True:  # fill the peer's queue: the next send must be posted
            try:
                mine.send(b"x" * 512)
            except BlockingIOError:
                break
            sent += 1
        io = engine.open_messages(mine)
        try:
            await assert_unposted_send_lets_go(engine, io, None, where, monkeypatch)
            async with anyio.create_task_group() as tg:
                tg.start_soon(io.send_msg, memoryview(b"the last"), [], None)
                await anyio.wait_all_tasks_blocked()
                assert len(io._in_flight) == 1  # posted and waiting for room
                peer.setblocking(False)
                got = [peer.recv(1024) for _ in range(sent)]
            with anyio.fail_after(5):
                while True:
                    try:
                        last = peer.recv(1024)
                        break
                    except BlockingIOError:
                        await anyio.sleep(0.01)
        finally:
            await io.close()
    assert got == [b"x" * 512] * sent
    assert last == b"the last"


@pytest.mark.parametrize("where", ["list", "table"])
@pytest.mark.parametrize("to", ["address", "peer"])
async def test_a_send_through_the_port_that_cannot_be_posted_lets_go_of_the_bytes(
    engine_name: str, to: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IOCP, every datagram through the port (``direct_first`` off): a
    ``WSASendTo`` (``address``) or ``WSASend`` (``peer``, a connected
    socket) that cannot be listed or entered leaves nothing in the engine's table and
    keeps no view of the caller's buffer; the next send arrives."""
    if engine_name != "iocp":
        pytest.skip("the IOCP engine's datagrams through the port")
    engine: Any = current_engine()
    async with await anyio.create_udp_socket(local_host="127.0.0.1") as receiver:
        port = receiver.extra(anyio.abc.SocketAttribute.local_port)
        if to == "peer":
            sender: Any = await anyio.create_connected_udp_socket("127.0.0.1", port)
            address = None
        else:
            sender = await anyio.create_udp_socket(local_host="127.0.0.1")
            address = ("127.0.0.1", port)
        async with sender:
            io = sender._io
            io.direct_first = False
            await assert_unposted_send_lets_go(engine, io, address, where, monkeypatch)
            assert await io.send_msg(memoryview(b"the next"), [], address) == 8
            with anyio.fail_after(5):
                data, _ = await receiver.receive()
            assert data == b"the next"


# -- listeners ------------------------------------------------------------------


@pytest.mark.parametrize("where", ["pool", "engine"])
async def test_a_listener_that_cannot_be_made_leaves_no_accept_posted(
    engine_name: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third of five accepts cannot be posted (``pool``: an error that
    is no shortage), or the engine cannot list the listener (``engine``),
    after the first ones reached the kernel:
    creating the listener fails, its socket is closed, the accepts posted
    before are withdrawn (io_uring: their cancels submitted before the
    close), IOCP's table of handles forgets the socket, and the port
    refuses connections and is free to bind."""
    completion_engine_only(engine_name)
    engine: Any = current_engine()
    cls = listener_class(engine_name)
    # io_uring: the accepts prepared so far reach the kernel before the
    # failure, as when a full ring is submitted in the middle of a fill
    # (prepared and never submitted, they would find the descriptor closed)
    submit_now = getattr(engine, "submit_now", lambda: None)
    posted = 0
    if where == "pool":
        real_post_accept = cls._post_accept

        def post_accept(listener: Any) -> Any:
            nonlocal posted
            if posted == 2:
                submit_now()
                raise OSError(errno.EINVAL, "refused for the test")
            posted += 1
            return real_post_accept(listener)

        monkeypatch.setattr(cls, "_post_accept", post_accept)
        expected: type[BaseException] = OSError
    else:

        class SubmitsThenFails(AddFails):
            def add(self, item: Any) -> None:
                submit_now()
                super().add(item)

        monkeypatch.setattr(engine, "_listeners", SubmitsThenFails(engine._listeners))
        expected = MemoryError
    sock = socket.create_server(("127.0.0.1", 0))
    port, fd = sock.getsockname()[1], sock.fileno()
    with pytest.raises(expected), anyio_iocp.tuning(backlog=5):
        get_async_backend().create_tcp_listener(sock)
    assert sock.fileno() == -1
    if where == "pool":
        assert posted == 2
    if engine_name == "io_uring":
        from anyio_iocp._engines.io_uring._uring import lib

        # the withdrawn accepts' cancels went to the kernel before the
        # descriptor was closed (a number reused later cannot take them)
        assert lib.iou_unsubmitted(engine._ring) == 0
    else:  # IOCP: its handle number may be reused
        assert fd not in engine._associated
    await poll_until(lambda: not engine.in_flight().get("accept"))
    with pytest.raises(ConnectionRefusedError), socket.socket() as client:
        client.settimeout(5)
        client.connect(("127.0.0.1", port))
    assert free_to_bind(socket.SOCK_STREAM, port)


async def test_an_iocp_accept_that_cannot_be_made_closes_its_socket(
    engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IOCP: the op of an ``AcceptEx`` cannot be made (no memory): the
    socket made for the connection is closed, the ``MemoryError`` reaches
    the caller, and the listener's socket is closed and forgotten."""
    if engine_name != "iocp":
        pytest.skip("the IOCP engine's AcceptEx")
    from anyio_iocp._engines.iocp import listener as module

    engine: Any = current_engine()
    conns: list[socket.socket] = []

    def no_op(sock: socket.socket, keep: Any) -> Any:
        conns.append(keep[0])
        raise MemoryError("no op for the test")

    monkeypatch.setattr(module, "IocpOp", no_op)
    sock = socket.create_server(("127.0.0.1", 0))
    fd = sock.fileno()
    with pytest.raises(MemoryError, match="no op for the test"):
        get_async_backend().create_tcp_listener(sock)
    assert len(conns) == 1 and conns[0].fileno() == -1
    assert sock.fileno() == -1 and fd not in engine._associated


def test_the_pool_withdraws_what_its_first_fill_posted() -> None:
    """No engine: a pool whose third accept fails with an error that is no
    shortage withdraws the two posted, forgets itself and raises."""
    made: list[object] = []
    withdrawn: list[object] = []
    forgotten: list[bool] = []

    class Pool(PostedAcceptPool[object]):
        def _post_accept(self) -> object:
            if len(made) == 2:
                raise OSError(errno.EINVAL, "refused for the test")
            made.append(object())
            return made[-1]

        def _withdraw(self, op: object) -> None:
            withdrawn.append(op)

        async def _drain(self, ops: list[object]) -> None:
            raise AssertionError("not closed: withdrawn")

        def _forget(self) -> None:
            forgotten.append(True)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(OSError, match="refused for the test"):
            Pool(sock, Tuning(backlog=5), EngineCounters())
    assert sorted(map(id, withdrawn)) == sorted(map(id, made)) and len(made) == 2
    assert forgotten == [True]
