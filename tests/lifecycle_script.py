"""Scenarios of tests/test_lifecycle.py, each run in its own interpreter
(``python -X dev -W error tests/lifecycle_script.py SCENARIO ENGINE``).

Every scenario prints ``fds N sockets M`` (descriptors, or handles on Windows,
and socket objects not closed) before and after, and ``ring fds [...]`` (the
io_uring descriptors left open) once everything has ended."""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketListener, SocketStream
from helpers import first_listener, open_fds, open_sockets

import anyio_iocp


def ring_fds() -> list[str]:
    if sys.platform == "win32":
        return []  # no io_uring there
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "io_uring" in os.readlink(f"/proc/self/fd/{fd}"):
                found.append(fd)
        except OSError:
            pass
    return found


async def busy_pair() -> tuple[SocketListener, SocketStream, SocketStream]:
    """A listener with its accept pool posted, a client with write-behind
    sends pending, and a server stream with a receive posted."""
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=4)
    listener = multi.listeners[0]
    port = listener.extra(SocketAttribute.local_port)
    client = await anyio_iocp.connect_tcp("127.0.0.1", port, sendcap=8)
    server = await listener.accept()
    with anyio.move_on_after(0.05):
        await server.receive()  # stays posted on io_uring
    with anyio.move_on_after(0.3):
        while True:
            await client.send(b"x" * 65536)  # the server reads nothing
    return listener, client, server


#: when the program's main function ended (to time the end of the run)
main_ended: list[float] = []
#: objects the program holds until after its run
kept_past_the_run: list[Any] = []


async def end_with_everything_open(mode: str) -> None:
    try:
        await leave_everything_open(mode)
    finally:
        main_ended.append(time.monotonic())


async def leave_everything_open(mode: str) -> None:
    if mode == "idle-gate":
        # a listener with an idle gate, open as the run ends (kept past it),
        # whose task is still waiting for a silent connection's first bytes:
        # the gate's close waits for the cancelled receive's completion
        multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", idletimeout=60_000)
        port = multi.listeners[0].extra(SocketAttribute.local_port)
        client = await anyio_iocp.connect_tcp("127.0.0.1", port)
        await client.send(b"hello")
        server = await multi.listeners[0].accept()
        silent = socket.create_connection(("127.0.0.1", port))
        kept_past_the_run.extend([multi, client, server, silent])
        await anyio.sleep(0.1)  # the gate accepts it and waits for its bytes
        return
    # never closed: dropped as this function ends, while the run ends
    _listener, client, _server = await busy_pair()
    if mode == "drop-then-return":
        # the client dropped while the run goes on: its close starts and waits
        # for its write-behind sends, which the server never reads, so it is
        # still under way when the run ends
        del client
        await anyio.sleep(0.2)
    if mode == "raise":
        raise RuntimeError("the program failed")


async def interrupted_mid_io() -> None:
    _listener, client, server = await busy_pair()

    async def pump(stream: SocketStream) -> None:
        while True:
            await stream.send(os.urandom(4096))
            await stream.receive()

    def interrupt_soon() -> None:
        time.sleep(0.3)
        if sys.platform == "win32":
            # Ctrl+C on Windows: the console runs the C runtime's SIGINT
            # handler on a thread of its own, which is what raise_signal does
            # from this one (os.kill with SIGINT would TerminateProcess)
            signal.raise_signal(signal.SIGINT)
        else:
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_soon, daemon=True).start()
    async with anyio.create_task_group() as tg:
        tg.start_soon(pump, client)
        tg.start_soon(pump, server)


async def echo_once(engine_fd_out: list[int]) -> bytes:
    from anyio_iocp._face.runstate import current_engine

    listener = first_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    port = listener.extra(SocketAttribute.local_port)
    client = await anyio.connect_tcp("127.0.0.1", port)
    async with listener, client, await listener.accept() as server:
        engine_fd_out.append(getattr(current_engine(), "fd", -1))
        await client.send(b"child echo")
        data: bytes = await server.receive()
        return data


async def parent_with_child() -> None:
    """Fork from a worker thread while this run's ring has a receive posted;
    the child runs its own loop; the parent's receive still completes here."""
    from anyio_iocp._face.runstate import current_engine

    listener, client, server = await busy_pair()
    parent_fd = getattr(current_engine(), "fd", -1)

    def fork_child() -> int:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                # the parent's signal wakeup descriptor is Trio's business,
                # not this package's: a child resets it before its own run
                signal.set_wakeup_fd(-1)
                inherited = ring_fds()
                fds: list[int] = []
                data = anyio.run(
                    echo_once, fds, backend="iocp", backend_options={"engine": sys.argv[2]}
                )
                own_ring = fds[0] == -1 or fds[0] != parent_fd
                print(f"child inherited rings {inherited}, got {data!r}", flush=True)
                code = 0 if data == b"child echo" and own_ring and not inherited else 1
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        return pid

    pid = await anyio.to_thread.run_sync(fork_child)
    _, status = await anyio.to_thread.run_sync(os.waitpid, pid, 0)
    print(f"child exit {os.waitstatus_to_exitcode(status)}", flush=True)
    # the parent's ring is intact: its posted receive gets the bytes sent now
    peer_sock = server.extra(SocketAttribute.raw_socket)
    assert isinstance(peer_sock, socket.socket)
    received = bytearray()
    with anyio.fail_after(10):
        while not received.endswith(b"x" * 100):
            received += await server.receive()
    print("parent still receives", flush=True)
    del listener, client  # left open: the end of the run closes them


def main() -> None:
    scenario, engine = sys.argv[1], sys.argv[2]
    options: dict[str, Any] = {"engine": engine}
    gc.collect()
    print(f"fds {open_fds()} sockets {open_sockets()}", flush=True)
    if scenario in ("return", "raise", "drop-then-return", "idle-gate"):
        try:
            anyio.run(end_with_everything_open, scenario, backend="iocp", backend_options=options)
        except RuntimeError as exc:
            print(f"raised {exc}", flush=True)
        print(f"run end took {time.monotonic() - main_ended[0]:.3f} s", flush=True)
        for kept in kept_past_the_run:
            if isinstance(kept, socket.socket):
                kept.close()
        kept_past_the_run.clear()
        gc.collect()
    elif scenario == "interrupt":
        # A shell without job control starts background commands with SIGINT
        # ignored, and that disposition is inherited: Python then keeps it,
        # Trio installs no KeyboardInterrupt handler, and the signal below
        # would be ignored (a CI run started with `cmd &` hung here).  The
        # test is about the backend under Ctrl+C, so Ctrl+C must be on.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            anyio.run(interrupted_mid_io, backend="iocp", backend_options=options)
        except* KeyboardInterrupt:
            print("KeyboardInterrupt", flush=True)
        # the process can run again afterwards
        fds: list[int] = []
        assert anyio.run(echo_once, fds, backend="iocp", backend_options=options) == b"child echo"
    elif scenario == "fork":
        anyio.run(parent_with_child, backend="iocp", backend_options=options)
    gc.collect()
    print(f"fds {open_fds()} sockets {open_sockets()}", flush=True)
    print(f"ring fds {ring_fds()}", flush=True)


if __name__ == "__main__":
    main()
