"""The ``"iocp"`` AnyIO backend: AnyIO's Trio backend with the socket layer
moved onto a completion engine.

Loaded by AnyIO as ``anyio._backends._iocp`` (see ``_anyio_iocp_hook``).
Tasks, cancellation, timeouts, synchronisation, threads, processes and the
rest are inherited from the Trio backend; TCP streams and listeners go through
the engine of the run.
"""

from __future__ import annotations

import inspect
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from anyio import CapacityLimiter
from anyio.abc import (
    ConnectedUDPSocket,
    ConnectedUNIXDatagramSocket,
    IPSockAddrType,
    SocketListener,
    SocketStream,
    UDPSocket,
    UNIXDatagramSocket,
    UNIXSocketStream,
)

from anyio_iocp._face.adapters import start_run as start_adapters
from anyio_iocp._face.api import check_port
from anyio_iocp._face.runstate import RunState, current_state, new_run_state
from anyio_iocp._face.schedule import requested_budget, requested_schedule, requested_spin
from anyio_iocp._face.tuning import effective, run_overrides
from anyio_iocp._interface.budget import ScheduleBudget
from anyio_iocp._interface.engine import Engine, EngineInfo, MessageIO
from anyio_iocp._interface.settings import RANGES, Tuning
from anyio_iocp._internals.anyio_backend import (
    TestRunner,
    TrioBackend,
    claim_worker_thread,
)
from anyio_iocp._streams.datagrams import (
    EngineConnectedUDPSocket,
    EngineConnectedUNIXDatagramSocket,
    EngineUDPSocket,
    EngineUNIXDatagramSocket,
)
from anyio_iocp._streams.nodelay import AcceptedNodelay
from anyio_iocp._streams.sockets import (
    EngineSocketStream,
    EngineTCPListener,
    EngineUNIXSocketStream,
)

T = TypeVar("T")


#: backend_options that go to trio.run, as for AnyIO's Trio backend
TRIO_OPTIONS = tuple(
    name for name in inspect.signature(trio.run).parameters if name not in ("async_fn", "args")
)
OWN_OPTIONS = ("engine", "adapters", "schedule", "budget", "spin", "profile", *RANGES)


def _split_options(options: dict[str, Any]) -> tuple[RunState, dict[str, Any]]:
    unknown = [name for name in options if name not in TRIO_OPTIONS and name not in OWN_OPTIONS]
    if unknown:
        raise ValueError(
            f"unknown backend option {unknown[0]!r}: expected one of "
            + ", ".join(map(repr, (*OWN_OPTIONS, *TRIO_OPTIONS)))
        )
    trio_options = dict(options)
    overrides = run_overrides(trio_options)  # profile, backlog, sendcap, ...
    adapters = start_adapters(trio_options.pop("adapters", None))  # on by default
    schedule = requested_schedule(trio_options.pop("schedule", None))
    budget = requested_budget(trio_options.pop("budget", None))
    spin = requested_spin(trio_options.pop("spin", None))
    state = new_run_state(trio_options.pop("engine", None), overrides)
    state.schedule = schedule
    state.budget_seconds = budget
    state.spin_seconds = spin
    state.adapters = adapters
    trio_options["instruments"] = [*trio_options.get("instruments", ()), state]
    return state, trio_options


#: socket() makes the socket non-blocking at once on Linux; 0 elsewhere
_SOCK_NONBLOCK: int = getattr(socket, "SOCK_NONBLOCK", 0)


class IocpBackend(TrioBackend):
    @classmethod
    def run(
        cls,
        func: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: dict[str, Any],
    ) -> T:
        _state, trio_options = _split_options(options)
        return super().run(func, args, kwargs, trio_options)

    @classmethod
    def create_test_runner(cls, options: dict[str, Any]) -> TestRunner:
        _state, trio_options = _split_options(options)
        return TestRunner(**trio_options)

    @classmethod
    async def run_sync_in_worker_thread(
        cls,
        func: Callable[..., T],
        args: tuple[Any, ...],
        abandon_on_cancel: bool = False,
        limiter: CapacityLimiter | None = None,
    ) -> T:
        token = cls.current_token()

        def wrapper() -> T:
            with claim_worker_thread(cls, token):
                return func(*args)

        return await trio.to_thread.run_sync(
            wrapper,
            abandon_on_cancel=abandon_on_cancel,
            limiter=limiter,  # type: ignore[arg-type]
        )

    # -- TCP through the engine -------------------------------------------

    # Our streams are not the Trio backend's SocketStream class, by design:
    # the overrides below return AnyIO's abstract SocketStream.
    @classmethod
    async def connect_tcp(  # type: ignore[override]
        cls, host: str, port: int, local_address: IPSockAddrType | None = None
    ) -> SocketStream:
        check_port(port)  # before an engine could see it
        state = current_state()
        engine = state.get_engine()
        tuning = effective(state.overrides)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # non-blocking from the start where the platform can (no FIONBIO call)
        sock = socket.socket(family, socket.SOCK_STREAM | _SOCK_NONBLOCK)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if local_address:
                sock.bind(local_address)
            await engine.connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return EngineSocketStream(engine.open_stream(sock, tuning), engine)

    @classmethod
    def create_tcp_listener(cls, sock: socket.socket) -> SocketListener:
        state = current_state()
        try:  # the socket is ours now: closed when no listener takes it
            engine = state.get_engine()
            # before the engine's listener, which may accept at once: the
            # connections it accepts pass the option on only if they came
            # after it was set
            nodelay = AcceptedNodelay(sock)
            listener = engine.open_listener(sock, effective(state.overrides))
        except BaseException:
            sock.close()
            raise
        return EngineTCPListener(listener, engine, nodelay)

    # -- UNIX streams through the engine -----------------------------------

    @classmethod
    async def connect_unix(
        cls, path: str | bytes, kind: socket.SocketKind = socket.SOCK_STREAM
    ) -> UNIXSocketStream:
        if kind != socket.SOCK_STREAM:
            # SOCK_SEQPACKET keeps record boundaries that byte streams do not
            return await super().connect_unix(path, kind)  # type: ignore[arg-type]
        engine, tuning = _engine_and_tuning()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await engine.connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return EngineUNIXSocketStream(engine.open_stream(sock, tuning), engine)

    @classmethod
    def create_unix_listener(cls, sock: socket.socket) -> SocketListener:
        if sock.type != socket.SOCK_STREAM:
            return super().create_unix_listener(sock)
        return cls.create_tcp_listener(sock)

    # -- datagrams through the engine --------------------------------------

    @classmethod
    async def create_udp_socket(  # type: ignore[override]
        cls,
        family: socket.AddressFamily,
        local_address: IPSockAddrType | None,
        remote_address: IPSockAddrType | None,
        reuse_port: bool,
    ) -> UDPSocket | ConnectedUDPSocket:
        engine, _tuning = _engine_and_tuning()
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if local_address:
                sock.bind(local_address)
            if remote_address:
                sock.connect(remote_address)  # no network traffic for UDP
            await trio.lowlevel.checkpoint()
        except BaseException:
            sock.close()
            raise
        io = engine.open_messages(sock)
        if remote_address:
            return EngineConnectedUDPSocket(io, engine.info, engine.budget)
        return EngineUDPSocket(io, engine.info, engine.budget)

    @classmethod
    async def create_unix_datagram_socket(  # type: ignore[override]
        cls, raw_socket: socket.socket, remote_path: str | bytes | None
    ) -> UNIXDatagramSocket | ConnectedUNIXDatagramSocket:
        engine, _tuning = _engine_and_tuning()
        raw_socket.setblocking(False)
        if remote_path:
            raw_socket.connect(remote_path)  # a datagram connect does not block
        await trio.lowlevel.checkpoint()
        io = engine.open_messages(raw_socket)
        if remote_path:
            return EngineConnectedUNIXDatagramSocket(io, engine.info, engine.budget)
        return EngineUNIXDatagramSocket(io, engine.info, engine.budget)

    # -- wrapping existing sockets -----------------------------------------

    @classmethod
    async def wrap_listener_socket(cls, sock: socket.socket) -> SocketListener:
        await trio.lowlevel.checkpoint()
        return cls.create_tcp_listener(sock)

    @classmethod
    async def wrap_stream_socket(cls, sock: socket.socket) -> SocketStream:  # type: ignore[override]
        engine, tuning = _engine_and_tuning()
        await trio.lowlevel.checkpoint()
        if sock.family == getattr(socket, "AF_UNIX", None):
            return EngineUNIXSocketStream(engine.open_stream(sock, tuning), engine)
        return EngineSocketStream(engine.open_stream(sock, tuning), engine)

    @classmethod
    async def wrap_unix_stream_socket(  # type: ignore[override]
        cls, sock: socket.socket
    ) -> UNIXSocketStream:
        engine, tuning = _engine_and_tuning()
        await trio.lowlevel.checkpoint()
        return EngineUNIXSocketStream(engine.open_stream(sock, tuning), engine)

    @classmethod
    async def wrap_udp_socket(cls, sock: socket.socket) -> UDPSocket:  # type: ignore[override]
        return await _wrap_messages(sock, EngineUDPSocket)

    @classmethod
    async def wrap_connected_udp_socket(  # type: ignore[override]
        cls, sock: socket.socket
    ) -> ConnectedUDPSocket:
        return await _wrap_messages(sock, EngineConnectedUDPSocket)

    @classmethod
    async def wrap_unix_datagram_socket(  # type: ignore[override]
        cls, sock: socket.socket
    ) -> UNIXDatagramSocket:
        return await _wrap_messages(sock, EngineUNIXDatagramSocket)

    @classmethod
    async def wrap_connected_unix_datagram_socket(  # type: ignore[override]
        cls, sock: socket.socket
    ) -> ConnectedUNIXDatagramSocket:
        return await _wrap_messages(sock, EngineConnectedUNIXDatagramSocket)


D = TypeVar("D")


async def _wrap_messages(
    sock: socket.socket, wrapper: Callable[[MessageIO, EngineInfo, ScheduleBudget], D]
) -> D:
    engine, _tuning = _engine_and_tuning()
    await trio.lowlevel.checkpoint()
    return wrapper(engine.open_messages(sock), engine.info, engine.budget)


def _engine_and_tuning() -> tuple[Engine, Tuning]:
    state = current_state()
    return state.get_engine(), effective(state.overrides)


backend_class = IocpBackend
