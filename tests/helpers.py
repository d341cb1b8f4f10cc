"""Small helpers shared by the test modules."""

from __future__ import annotations

import ctypes
import errno
import gc
import os
import select
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import pytest
import sniffio
import trio
from anyio.abc import SocketAttribute, SocketListener, SocketStream
from anyio.streams.stapled import MultiListener

import anyio_iocp


def first_listener(multi: anyio.abc.Listener[SocketStream]) -> SocketListener:
    assert isinstance(multi, MultiListener)
    listener = multi.listeners[0]
    assert isinstance(listener, SocketListener)
    return listener


async def open_pair(host: str = "127.0.0.1") -> tuple[SocketListener, SocketStream, SocketStream]:
    """A listener, a client stream connected to it, and the accepted server stream."""
    listener = first_listener(await anyio.create_tcp_listener(local_host=host))
    client = await anyio.connect_tcp(host, listener.extra(SocketAttribute.local_port))
    server = await listener.accept()
    return listener, client, server


async def arrived(stream: SocketStream, size: int) -> None:
    """Until ``size`` bytes wait in ``stream``'s socket (peeked: nothing taken)."""
    raw: socket.socket = stream.extra(SocketAttribute.raw_socket)
    with anyio.fail_after(5):
        while True:
            if select.select([raw], [], [], 0)[0]:
                try:
                    if len(raw.recv(size, socket.MSG_PEEK)) >= size:
                        return
                except BlockingIOError:
                    pass
            await anyio.sleep(0.005)


def under_wine() -> bool:
    """Windows CPython running under Wine (the project's Linux CI runs the
    Windows suite that way)."""
    if sys.platform != "win32":
        return False
    ntdll = ctypes.WinDLL("ntdll")
    return hasattr(ntdll, "wine_get_version")


def open_fds() -> int:
    """Descriptors (Linux) or handles (Windows) the process holds."""
    if sys.platform != "win32":
        return len(os.listdir("/proc/self/fd"))
    kernel32 = ctypes.WinDLL("kernel32")
    count = ctypes.c_ulong()
    if not kernel32.GetProcessHandleCount(kernel32.GetCurrentProcess(), ctypes.byref(count)):
        raise ctypes.WinError()
    return count.value


def open_sockets() -> int:
    """Socket objects of this process not closed yet (after a collection).

    The leak measure that works under Wine too, where ``open_fds()`` does
    not: the handle count reads 0 there, and the Wine process's own Linux
    descriptors move by a dozen either way between identical rounds."""
    gc.collect()
    return sum(
        1 for obj in gc.get_objects() if isinstance(obj, socket.socket) and obj.fileno() != -1
    )


#: why a reset shows up as end of stream under Wine (tests mark it expected there)
WINE_LATE_RESET = (
    "Wine reports a connection reset only to a receive already pending when the RST "
    "arrives; a recv() called afterwards, blocking or after select(), returns b'' "
    "(observed 20 of 20 each, while a Linux peer saw Wine's SO_LINGER {1, 0} close "
    "as a reset 20 of 20): see docs/windows.md"
)


async def recv_exactly(stream: SocketStream, n: int) -> bytes:
    parts = []
    while n:
        chunk = await stream.receive(n)
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


class _FirstFails:
    """The first call of :meth:`_grow` raises MemoryError, later ones pass."""

    failed = False

    def _grow(self, what: str) -> None:
        if not self.failed:
            self.failed = True
            raise MemoryError(f"the {what} could not grow")


class AppendFails(_FirstFails, list[Any]):
    """A list whose first append raises MemoryError: a queue or a list of
    operations that cannot grow."""

    def append(self, item: Any) -> None:
        self._grow("list")
        super().append(item)


class AppendOrExtendFails(AppendFails):
    """A list whose first append or extend raises MemoryError."""

    def extend(self, items: Any) -> None:
        self._grow("list")
        super().extend(items)


class AddFails(_FirstFails, set[Any]):
    """A set whose first add raises MemoryError."""

    def add(self, item: Any) -> None:
        self._grow("set")
        super().add(item)


class SetItemFails(_FirstFails, dict[Any, Any]):
    """A dict whose first item assignment raises MemoryError: a table that
    cannot grow."""

    def __setitem__(self, key: Any, value: Any) -> None:
        self._grow("table")
        super().__setitem__(key, value)


@asynccontextmanager
async def stream_and_peer(
    engine_name: str, only: str, sendcap: int = 1
) -> AsyncIterator[tuple[Any, socket.socket]]:
    """A stream of the engine ``only`` (the test skips on the others) and the
    raw socket at its other end."""
    if engine_name != only:
        pytest.skip(f"the {only} engine's order of posting")
    server = socket.create_server(("127.0.0.1", 0))
    with server:
        port = server.getsockname()[1]
        stream = await anyio_iocp.connect_tcp("127.0.0.1", port, sendcap=sendcap)
        peer, _ = server.accept()
    with peer:
        async with stream:
            yield stream, peer


def read_to_eof(peer: socket.socket) -> bytes:
    """Everything ``peer`` receives until the other end stops sending."""
    peer.settimeout(5)
    received = bytearray()
    while chunk := peer.recv(65536):
        received += chunk
    return bytes(received)


def fail_count_once(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """The engine's next count of ``kind`` operations posted raises
    MemoryError (a count that cannot grow); later ones count."""
    from anyio_iocp._interface.stats import EngineCounters

    count = EngineCounters.count_posted
    failed: list[str] = []

    def count_posted(self: EngineCounters, what: str, n: int = 1) -> None:
        if what == kind and not failed:
            failed.append(what)
            raise MemoryError("the count could not grow")
        count(self, what, n)

    monkeypatch.setattr(EngineCounters, "count_posted", count_posted)


async def assert_broken_by_no_memory(call: Callable[[], Awaitable[object]]) -> None:
    """``call`` (a stream's receive or send) fails now and again, with the
    error that names the want of memory (ENOMEM, caused by a MemoryError)."""
    for _ in range(2):
        with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError) as caught:
            await call()
        cause = caught.value.__cause__
        assert isinstance(cause, OSError) and cause.errno == errno.ENOMEM
        assert isinstance(cause.__cause__, MemoryError)


class MakerFailsAt:
    """Stands for the class ``real``: its ``n``-th instance (from 1) cannot
    be made (MemoryError); the instances made are in ``made``."""

    def __init__(self, real: Callable[..., Any], n: int) -> None:
        self.real, self.n = real, n
        self.made: list[Any] = []

    def __call__(self, *args: Any) -> Any:
        if len(self.made) == self.n - 1:
            raise MemoryError("the object could not be made")
        self.made.append(self.real(*args))
        return self.made[-1]


class SliceFails(bytes):
    """Bytes whose first slice with the stop ``fail_stop`` (set in a
    subclass) raises MemoryError: a copy that fails for want of memory."""

    fail_stop: int | None = None

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice) and key.stop is not None and key.stop == self.fail_stop:
            type(self).fail_stop = None  # once
            raise MemoryError
        return bytes(self)[key]


class StepCounter(trio.abc.Instrument):
    """Counts the scheduler's steps of every task (add it with
    ``trio.lowlevel.add_instrument``)."""

    def __init__(self) -> None:
        self.steps: Counter[trio.lowlevel.Task] = Counter()

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] += 1

    def steps_named(self, name: str) -> int:
        return sum(count for task, count in self.steps.items() if task.name == name)


@contextmanager
def steps_of_this_task() -> Iterator[Callable[[], int]]:
    """How many times the scheduler has resumed the calling task so far: a call
    that went through a schedule point makes it grow (Trio may run the other
    runnable tasks of a batch before or after it, so watching another task is
    no proof either way)."""
    task = trio.lowlevel.current_task()
    counter = StepCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        yield lambda: counter.steps[task]
    finally:
        trio.lowlevel.remove_instrument(counter)


async def make_busy(client: SocketStream, server: SocketStream) -> None:
    """BUSY_AFTER exchanges: from then on the server's io_uring stream waits
    with a multishot receive (before, with single receives from the pool)."""
    from anyio_iocp._engines.io_uring.multishot import BUSY_AFTER  # io_uring only

    for i in range(BUSY_AFTER):
        await client.send(b"warm-up %d" % i)
        assert await server.receive() == b"warm-up %d" % i


async def sniffio_seen() -> dict[str, str]:
    """What sniffio answers in the calling task, a child task, a system task
    and in calls back from a worker thread (sync and async)."""
    seen: dict[str, str] = {"main": sniffio.current_async_library()}

    async def child() -> None:
        await anyio.sleep(0)
        seen["child"] = sniffio.current_async_library()

    async def system() -> None:
        seen["system"] = sniffio.current_async_library()

    async with anyio.create_task_group() as tg:
        tg.start_soon(child)
    trio.lowlevel.spawn_system_task(system)
    await anyio.sleep(0.01)

    def in_worker() -> tuple[str, str]:
        sync = anyio.from_thread.run_sync(sniffio.current_async_library)

        async def async_fn() -> str:
            return sniffio.current_async_library()

        return sync, anyio.from_thread.run(async_fn)

    seen["from_thread.run_sync"], seen["from_thread.run"] = await anyio.to_thread.run_sync(
        in_worker
    )
    return seen


SNIFFIO_PLACES = ("main", "child", "system", "from_thread.run_sync", "from_thread.run")


class MovedClock:
    """``time.monotonic`` as the test moves it (the ``moved_clock`` fixture)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


#: the bulk transfer of after_a_burst: 256 KiB
BURST_PAYLOAD = bytes(range(256)) * 1024


@asynccontextmanager
async def after_a_burst(recvburst: int = 8, buffersize: int = 1024) -> AsyncIterator[SocketStream]:
    """A server stream with these settings that has just received a 256 KiB
    burst (checked), in small enough buffers for ABD to raise its pool."""
    multi = await anyio_iocp.create_tcp_listener(
        local_host="127.0.0.1", recvburst=recvburst, buffersize=buffersize
    )
    listener = first_listener(multi)
    client = await anyio.connect_tcp("127.0.0.1", listener.extra(SocketAttribute.local_port))
    server = await listener.accept()
    async with multi, client, server:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.send, BURST_PAYLOAD)
            assert await recv_exactly(server, len(BURST_PAYLOAD)) == BURST_PAYLOAD
        yield server


@contextmanager
def explicit_adapters_cleared(disable: Iterable[str] | None = None) -> Iterator[None]:
    """The libraries enabled with ``enable_for`` (or ``disable``) disabled for
    the block; afterwards those enabled before are enabled again."""
    before = anyio_iocp.enabled_libraries()  # outside a run: the explicit ones
    for library in before if disable is None else disable:
        anyio_iocp.disable_for(library)
    try:
        yield
    finally:
        for library in before:
            anyio_iocp.enable_for(library)


def listener_class(engine_name: str) -> Any:
    """The listener class (a pool of posted accepts) of the completion
    engine ``engine_name``: io_uring's, or IOCP's."""
    if engine_name == "io_uring":
        from anyio_iocp._engines.io_uring.listener import UringListenerIO

        return UringListenerIO
    from anyio_iocp._engines.iocp.listener import IocpListenerIO

    return IocpListenerIO


def post_failing_ring_accept(listener: Any, code: int) -> Any:
    """Post, in place of one real accept of an io_uring listener's pool, a
    no-op whose completion reaches the listener as an accept that failed with
    the errno ``code`` (a cancelled one still ends as cancelled).  Returns
    the op; it takes no connection from the listen queue."""
    from anyio_iocp._engines.io_uring._uring import lib

    from anyio_iocp._engines.io_uring.listener import AcceptOp
    from anyio_iocp._face.runstate import current_engine

    class FailingAccept(AcceptOp):
        __slots__ = ()

        def complete(self, res: int, flags: int) -> None:
            super().complete(-code if res == 0 else res, flags)

    engine: Any = current_engine()
    op = FailingAccept(engine.new_id(), listener)
    engine.post_registered(op, lib.iou_prep_nop)
    return op


def post_failing_iocp_accept(listener: Any, code: int) -> Any:
    """Post, in place of one real ``AcceptEx`` of an IOCP listener's pool, a
    packet on Trio's completion port (``PostQueuedCompletionStatus``) for an
    op whose completion reaches the listener's packet handler as an
    ``AcceptEx`` that failed with the Winsock error ``code``.  Returns the
    op; it takes no connection from the listen queue.  Windows only."""
    from anyio_iocp._engines.iocp.engine import IocpOp
    from anyio_iocp._engines.iocp.winsock import ffi
    from anyio_iocp._face.runstate import current_engine

    post_packet = ctypes.windll.kernel32.PostQueuedCompletionStatus  # type: ignore[attr-defined,unused-ignore]
    post_packet.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_size_t, ctypes.c_void_p]

    class FailingAccept(IocpOp):
        def complete(self, transferred: int) -> None:
            # what IocpOp.complete makes of an AcceptEx that failed with ``code``
            self.error = code
            self.done = True
            assert self.on_complete is not None
            self.on_complete(self)
            self.wake()

    engine: Any = current_engine()
    # the accept's own socket, which the listener closes when it fails
    op = FailingAccept(listener.sock, (socket.socket(listener.family), None, None))
    op.on_complete = listener.on_accept_packet
    engine.enter(op, "AcceptEx", listener.sock.fileno())
    port = int(ffi.cast("uintptr_t", engine._port))
    assert post_packet(port, 0, engine._key, op.address)
    return op


def wait_for_unreaped_completion(engine: Any) -> None:
    """Block the loop (no pass, so nothing reaps) until the kernel has posted a
    completion; each sleep's system call lets the kernel finish its work."""
    from anyio_iocp._engines.io_uring._uring import lib

    deadline = time.monotonic() + 2
    while not lib.iou_cq_ready(engine._ring):
        assert time.monotonic() < deadline, "the kernel posted no completion"
        time.sleep(0.001)


#: budgets a test puts in place of the run's, by name: (schedule, length in
#: seconds, whether every call that did not wait yields)
BUDGET_CASES: dict[str, tuple[str, float, bool]] = {
    # a budget that does not run out during a test: no such call yields
    "long-budget": ("budget", 5.0, False),
    # a budget that has always run out: every such call yields
    "spent-budget": ("budget", 1e-9, True),
    "strict": ("strict", 0.001, True),
}


def peer_closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the peer of the plain socket ``sock`` has closed (end of
    stream or a reset), waiting up to ``timeout`` seconds for it (blocking:
    call it in a thread from a task)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


#: the two ways the package is told Trio's internals are not the ones it was
#: written for: the environment's switch, and another Trio release
TRIO_INTERNALS_REFUSED = ("switch", "release")


def refuse_trio_internals(monkeypatch: Any, how: str) -> None:
    """Make the checks of ``anyio_iocp._internals.trio_traps`` refuse Trio's
    internals, ``how`` being one of :data:`TRIO_INTERNALS_REFUSED`."""
    from anyio_iocp._internals import trio_traps

    if how == "switch":
        monkeypatch.setenv(trio_traps.TRAPS_ENV, "public")
    else:
        monkeypatch.setattr(trio_traps, "written_for", lambda distribution, tested: False)


async def poll_until(
    condition: Callable[[], object], seconds: float = 5.0, step: float = 0.01
) -> None:
    """Sleep ``step`` at a time until ``condition()`` is true; TooSlowError
    (anyio's ``fail_after``) after ``seconds``."""
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(step)
