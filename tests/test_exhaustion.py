"""Out of descriptors during an accept storm: the listener pauses with back-off
instead of spinning or ending, says so once, and serves every connection once
descriptors are free again.  EMFILE (the process's limit) comes from a lowered
RLIMIT_NOFILE and a full descriptor table; ENFILE (the system's limit) is
injected at the accept (see ``enfile_script.py``)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from helpers import first_listener, recv_exactly

import anyio_iocp

if sys.platform == "win32":
    pytest.skip(
        "descriptor limits (RLIMIT_NOFILE, the resource module) are POSIX's",
        allow_module_level=True,
    )
import resource

pytestmark = pytest.mark.anyio

CLIENTS = 30
STARVED_SECONDS = 1.0


@contextlib.contextmanager
def low_descriptor_limit(room: int) -> Iterator[None]:
    """A soft RLIMIT_NOFILE ``room`` above the highest descriptor in use.

    It must be lowered before the listener exists: io_uring reads the limit
    when an accept is posted, not when it runs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + room, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def fill_descriptor_table() -> list[int]:
    """Take every free descriptor: the next socket gets EMFILE."""
    fillers: list[int] = []
    with contextlib.suppress(OSError):
        while True:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
    return fillers


#: 3 clients, fewer than the 8 posted accepts: each arrival wakes one posted
#: accept, which fails, and the other five stay posted with no wake-up coming
#: for the connections already queued (the listener must probe with a new one)
@pytest.mark.parametrize("count", [CLIENTS, 3])
async def test_accept_storm_out_of_descriptors(
    caplog: pytest.LogCaptureFixture, count: int, trace_events: list[anyio_iocp.TraceEvent]
) -> None:
    clients = [socket.socket() for _ in range(count)]  # made while descriptors are free
    accepted: list[SocketStream] = []
    caplog.set_level(logging.INFO, logger="anyio_iocp")
    with low_descriptor_limit(room=64):
        multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=8)
        listener = first_listener(multi)
        backoff: Any = listener._io._backoff  # type: ignore[attr-defined]
        port = listener.extra(SocketAttribute.local_port)

        async def serve() -> None:
            while True:
                accepted.append(await listener.accept())

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            await anyio.sleep(0.05)
            fillers = fill_descriptor_table()
            try:
                for client in clients:
                    client.connect(("127.0.0.1", port))  # the kernel completes these
                await anyio.sleep(STARVED_SECONDS)
                starved_failures = backoff.failures
                assert starved_failures > 0, "accept must have hit EMFILE"
                assert not accepted
                # back-off, not a spin: 10 ms doubling to 1 s is a handful of
                # attempts per second (a spinning listener makes thousands)
                assert starved_failures < 40
            finally:
                for fd in fillers:
                    os.close(fd)
            with anyio.fail_after(10):
                while len(accepted) < count:
                    await anyio.sleep(0.01)
            assert not backoff.starving
            # every accepted connection works, matched to its client by port
            by_port = {s.extra(SocketAttribute.remote_port): s for s in accepted}
            for i, client in enumerate(clients):
                client.sendall(b"client %03d" % i)
                stream = by_port[client.getsockname()[1]]
                assert await recv_exactly(stream, 10) == b"client %03d" % i
            tg.cancel_scope.cancel()

    # the package's own log (the trace, on in this test, has a logger of its own)
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and r.name == "anyio_iocp"
    ]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "EMFILE" in warnings[0].getMessage()
    infos = [
        r.getMessage()
        for r in caplog.records
        if "accepting again" in r.getMessage() and r.name == "anyio_iocp"
    ]
    assert len(infos) == 1
    # the trace tells each pause and the end of the shortage; the statistics count the pauses
    pauses = [e for e in trace_events if e.kind == "accept.backoff"]
    assert pauses and all(e.fields["errno"] == "EMFILE" for e in pauses)
    assert [e.kind for e in trace_events if e.kind == "accept.resumed"] == ["accept.resumed"]
    assert anyio_iocp.statistics().accept_backoffs == len(pauses)
    for stream in accepted:
        await stream.aclose()
    for client in clients:
        client.close()
    await multi.aclose()


async def test_other_accept_errors_still_raise() -> None:
    """Only descriptor shortages pause: a listener whose socket is shut down
    (EINVAL from accept) still raises from accept()."""
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=2)
    listener = first_listener(multi)
    raw = listener.extra(SocketAttribute.raw_socket)
    async with multi:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:

                async def shut_down_soon() -> None:
                    await anyio.sleep(0.1)
                    raw.shutdown(socket.SHUT_RDWR)

                tg.start_soon(shut_down_soon)
                with pytest.raises(anyio.BrokenResourceError):
                    await listener.accept()


async def test_a_shortage_met_after_one_ends_pauses_again() -> None:
    """Two connections arrive while the descriptor table is full: their
    wake-ups go to posted accepts that fail.  One descriptor is freed: the
    probe takes the first connection and the shortage ends.  The table is
    full again, so taking the second fails too (on io_uring, the direct
    accept4 of the refill, while an accept posted before the shortage is
    still there and will never be woken for it).  That failure must start a
    pause like any other, so that accept() tries again once descriptors are
    free, instead of waiting for a completion that never comes."""
    clients = [socket.socket() for _ in range(2)]
    with low_descriptor_limit(room=64):
        multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=3)
        listener = first_listener(multi)
        port = listener.extra(SocketAttribute.local_port)
        await anyio.sleep(0.05)
        fillers = fill_descriptor_table()
        try:
            for client in clients:
                client.connect(("127.0.0.1", port))
            await anyio.sleep(0.1)
            os.close(fillers.pop())  # room for one connection
            with anyio.fail_after(5):
                first = await listener.accept()

            # freed while the second accept() waits: it must get the
            # connection within a pause (at most 1 s), not never
            async def free_soon() -> None:
                await anyio.sleep(0.3)
                while fillers:
                    os.close(fillers.pop())

            async with anyio.create_task_group() as tg:
                tg.start_soon(free_soon)
                with anyio.fail_after(5):
                    second = await listener.accept()
        finally:
            for fd in fillers:
                os.close(fd)
        ports = {
            first.extra(SocketAttribute.remote_port),
            second.extra(SocketAttribute.remote_port),
        }
        assert ports == {c.getsockname()[1] for c in clients}
        for stream in (first, second):
            await stream.aclose()
        for client in clients:
            client.close()
        await multi.aclose()


ENFILE_SCRIPT = Path(__file__).with_name("enfile_script.py")


def test_accept_storm_system_out_of_descriptors(engine_name: str) -> None:
    """accept failing with ENFILE (the system's descriptor table is full): the
    listener backs off, says so once, and serves every waiting client once
    the fault clears.

    The system-wide limit cannot be reached safely on a shared machine, so
    the fault is injected, in a fresh interpreter (``enfile_script.py``): on
    the readiness engine a seccomp filter (``SECCOMP_RET_USER_NOTIF``) makes
    the loop thread's real ``accept4`` system call return -ENFILE while the
    fault is on; on io_uring, whose ``IORING_OP_ACCEPT`` no system call
    filter sees, each accept the listener posts goes through the ring as a
    no-op whose completion reaches the listener as -ENFILE."""
    result = subprocess.run(
        [sys.executable, str(ENFILE_SCRIPT), engine_name],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    values = dict(line.rsplit(" ", 1) for line in lines if line[0].islower())
    # back-off while refused: a few attempts a second, not a spin
    assert 0 < int(values["failures"]) < 40
    assert values["accepted while refused"] == "0"
    # every refused accept was seen by the listener as a failure, and only those
    assert int(values["refused"]) == int(values["total failures"]) > 0
    assert values["starving after"] == "False"
    assert values["accepted"] == "20"
    warnings = [line for line in lines if line.startswith("WARNING ")]
    assert len(warnings) == 1, warnings
    assert "accept failed with ENFILE" in warnings[0]
    assert "system-wide descriptor limit" in warnings[0]
    infos = [line for line in lines if line.startswith("INFO ")]
    assert len(infos) == 1 and "accepting again after" in infos[0], infos
