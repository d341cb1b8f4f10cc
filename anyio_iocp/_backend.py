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

from ._compat import check_anyio

check_anyio()

import trio  # noqa: E402
from anyio import CapacityLimiter  # noqa: E402
from anyio._backends._trio import TestRunner, TrioBackend  # noqa: E402
from anyio._core._eventloop import claim_worker_thread  # noqa: E402
from anyio.abc import IPSockAddrType, SocketListener, SocketStream  # noqa: E402

from ._api import check_port  # noqa: E402
from ._runstate import RunState, current_state, new_run_state  # noqa: E402
from ._streams import EngineSocketStream, EngineTCPListener  # noqa: E402
from ._tuning import RANGES, effective, run_overrides  # noqa: E402

T = TypeVar("T")


#: backend_options that go to trio.run, as for AnyIO's Trio backend
TRIO_OPTIONS = tuple(
    name for name in inspect.signature(trio.run).parameters if name not in ("async_fn", "args")
)
OWN_OPTIONS = ("engine", "profile", *RANGES)


def _split_options(options: dict[str, Any]) -> tuple[RunState, dict[str, Any]]:
    unknown = [name for name in options if name not in TRIO_OPTIONS and name not in OWN_OPTIONS]
    if unknown:
        raise ValueError(
            f"unknown backend option {unknown[0]!r}: expected one of "
            + ", ".join(map(repr, (*OWN_OPTIONS, *TRIO_OPTIONS)))
        )
    trio_options = dict(options)
    overrides = run_overrides(trio_options)  # profile, backlog, sendcap, ...
    state = new_run_state(trio_options.pop("engine", None), overrides)
    trio_options["instruments"] = [*trio_options.get("instruments", ()), state]
    return state, trio_options


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
        sock = socket.socket(family, socket.SOCK_STREAM)
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
        engine = state.get_engine()
        return EngineTCPListener(engine.open_listener(sock, effective(state.overrides)), engine)

    @classmethod
    async def wrap_listener_socket(cls, sock: socket.socket) -> SocketListener:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            await trio.lowlevel.checkpoint()
            return cls.create_tcp_listener(sock)
        return await super().wrap_listener_socket(sock)

    @classmethod
    async def wrap_stream_socket(cls, sock: socket.socket) -> SocketStream:  # type: ignore[override]
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            state = current_state()
            engine = state.get_engine()
            await trio.lowlevel.checkpoint()
            return EngineSocketStream(engine.open_stream(sock, effective(state.overrides)), engine)
        return await super().wrap_stream_socket(sock)


backend_class = IocpBackend
