"""Directly accepted sockets that are non-blocking by inheritance
(anyio_iocp._engines.iocp.inherited): the probe's answer on each platform,
the socket class's record of its mode, and, on the IOCP engine, connections
accepted directly with no ``setblocking`` call that still never wait."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from anyio.abc import SocketAttribute
from test_busy_listener import (
    accept,
    assert_each_reaches_its_own_stream,
    assert_recv_does_not_wait,
    queued_connections,
)

import anyio_iocp
from anyio_iocp._engines.iocp import inherited
from anyio_iocp._engines.iocp.inherited import InheritedNonblocking, inherits_nonblocking

CLIENTS = 4
#: probes a test makes on Windows before it takes False for the answer
PROBE_TRIES = 3


def probe_again(monkeypatch: pytest.MonkeyPatch) -> bool:
    """``inherits_nonblocking()`` with no answer kept: it runs the probe,
    and keeps what the probe said.  On Windows up to ``PROBE_TRIES`` probes,
    until one says True: the probe takes a receive that fails within 50 ms
    for non-blocking, and a stalled machine (a wineserver kept waiting) can
    make an inherited mode's receive slower than that once.  On Linux one
    probe, whose False is exact."""
    for _ in range(PROBE_TRIES if sys.platform == "win32" else 1):
        monkeypatch.setattr(inherited, "_probed", None)
        answer = inherits_nonblocking()
        assert inherited._probed is answer, "the probe's answer is kept"
        if answer:
            break
    return answer


@pytest.fixture
def connected() -> Iterator[tuple[InheritedNonblocking, socket.socket]]:
    """An InheritedNonblocking socket over a connected descriptor that is
    non-blocking while Python's object was never told (as Winsock's accept
    hands one over), and its peer."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname()) as peer:
            listener.settimeout(5.0)  # (a non-blocking descriptor: inherited on Windows)
            fd, _ = listener._accept()  # type: ignore[attr-defined]
            if sys.platform != "win32":
                os.set_blocking(fd, False)  # (Linux's accept does not pass the mode on)
            with InheritedNonblocking(listener.family, listener.type, listener.proto, fd) as sock:
                yield sock, peer


def test_the_probe_sees_what_accept_passes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Winsock's accept passes the listener's non-blocking mode on (Wine's
    too); Linux's does not (accept4 takes it as a flag)."""
    assert probe_again(monkeypatch) is (sys.platform == "win32")


@pytest.mark.parametrize("default", [0.0, 1.0])
def test_no_probe_under_a_default_timeout(default: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``socket.setdefaulttimeout()`` in force, Python sets each new
    socket object's mode itself: the probe would see its own doing (0.0) or
    wait out the default in its receive (1.0).  The answer is False at once,
    and not kept: without the default, the probe runs."""
    monkeypatch.setattr(inherited, "_probed", None)
    socket.setdefaulttimeout(default)
    try:
        start = time.perf_counter()
        assert inherits_nonblocking() is False
        assert time.perf_counter() - start < 0.5
    finally:
        socket.setdefaulttimeout(None)
    assert inherited._probed is None
    # the probe runs (and its answer is kept)
    assert probe_again(monkeypatch) is (sys.platform == "win32")
    assert inherited._probed is (sys.platform == "win32")


def test_a_probe_that_could_not_run_is_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short of descriptors (say) at the first listener: no, for now, and
    the probe runs again at the next."""
    monkeypatch.setattr(inherited, "_probed", None)

    def no_descriptor(sock: socket.socket) -> tuple[int, Any]:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(inherited, "accept_descriptor", no_descriptor)
    assert inherits_nonblocking() is False
    assert inherited._probed is None
    monkeypatch.undo()
    assert probe_again(monkeypatch) is (sys.platform == "win32")
    assert inherited._probed is (sys.platform == "win32")


def test_the_probe_tells_a_blocking_descriptor_by_its_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        with socket.create_connection(listener.getsockname()):
            conn, _ = listener.accept()  # blocking
            with conn:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, inherited.PROBE_TIMEOUT)
                start = time.perf_counter()
                assert not inherited._recv_fails_at_once(conn)
                assert time.perf_counter() - start >= inherited.PROBE_TIMEOUT_S * 0.9
                conn.setblocking(False)
                assert inherited._recv_fails_at_once(conn)


def test_the_socket_reports_its_inherited_mode(
    connected: tuple[InheritedNonblocking, socket.socket],
) -> None:
    sock, peer = connected
    assert sock.gettimeout() == 0.0
    assert_recv_does_not_wait(sock)
    peer.sendall(b"x")
    deadline = time.perf_counter() + 5
    while True:
        try:
            assert sock.recv(10) == b"x"
            break
        except BlockingIOError:
            assert time.perf_counter() < deadline
            time.sleep(0.01)


@pytest.mark.parametrize(
    ("change", "timeout"),
    [
        (lambda s: s.setblocking(True), None),
        (lambda s: s.settimeout(2.5), 2.5),
        (lambda s: s.settimeout(None), None),
        (lambda s: s.setblocking(False), 0.0),
    ],
    ids=["setblocking(True)", "settimeout(2.5)", "settimeout(None)", "setblocking(False)"],
)
def test_a_mode_set_later_is_reported(
    connected: tuple[InheritedNonblocking, socket.socket], change: Any, timeout: float | None
) -> None:
    sock, _peer = connected
    change(sock)
    assert sock.gettimeout() == timeout
    if timeout is None:
        # really blocking now: a receive waits for its timeout
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, inherited.PROBE_TIMEOUT)
        start = time.perf_counter()
        with pytest.raises(OSError):  # (Windows: WSAETIMEDOUT; Linux: EAGAIN)
            sock.recv(1)
        assert time.perf_counter() - start >= inherited.PROBE_TIMEOUT_S * 0.9


@pytest.mark.anyio
@pytest.mark.parametrize("probe_saw_it", [True, False], ids=["inherited", "not-seen"])
async def test_directly_accepted_connections_make_no_setblocking_call(
    engine_name: str, probe_saw_it: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IOCP: a connection taken by the direct accept is an
    InheritedNonblocking socket where the probe saw the inheritance, and the
    stream sets no mode on it; where it did not, a plain socket the stream
    makes non-blocking.  Either way its receives never wait, and its bytes
    arrive."""
    if engine_name != "iocp":
        pytest.skip("the IOCP engine's direct accept")
    from anyio_iocp._engines.iocp import listener as iocp_listener

    monkeypatch.setattr(iocp_listener, "inherits_nonblocking", lambda: probe_saw_it)
    calls: list[socket.socket] = []
    real_setblocking = socket.socket.setblocking

    def setblocking(sock: socket.socket, flag: bool) -> None:
        calls.append(sock)
        real_setblocking(sock, flag)

    monkeypatch.setattr(socket.socket, "setblocking", setblocking)
    async with queued_connections(1, CLIENTS) as queued:
        before = anyio_iocp.statistics().direct_calls["accept"]
        await accept(queued, CLIENTS)
        assert anyio_iocp.statistics().direct_calls["accept"] == before + CLIENTS - 1
        raw = [s.extra(SocketAttribute.raw_socket) for s in queued.accepted]
        direct = [sock for sock in raw if isinstance(sock, InheritedNonblocking)]
        if probe_saw_it:
            assert len(direct) == CLIENTS - 1
            assert not any(sock in calls for sock in direct)
        else:
            assert not direct
            assert all(sock in calls for sock in raw)
        for sock in raw:
            assert sock.gettimeout() == 0.0
            assert_recv_does_not_wait(sock)
        await assert_each_reaches_its_own_stream(queued)
