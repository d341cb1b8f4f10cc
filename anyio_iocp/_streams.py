"""AnyIO socket streams and listeners on top of any engine.

This layer is written once: it gives AnyIO's semantics (resource guards,
``EndOfStream``, ``BrokenResourceError`` with the OS error as cause,
``ClosedResourceError``, typed attributes) to whatever engine moves the bytes.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import trio
from anyio import (
    BrokenResourceError,
    ClosedResourceError,
    EndOfStream,
    ResourceGuard,
)
from anyio.abc import SocketListener, SocketStream

from ._attributes import TuningAttribute
from ._engine import Engine, EngineInfo, ListenerIO, StreamIO
from ._idle import IdleGate
from ._runstate import current_state
from ._tuning import LISTENER_SETTINGS, STREAM_SETTINGS, Usage


def _tuning_attributes(
    io: StreamIO | ListenerIO, names: tuple[str, ...], info: EngineInfo
) -> dict[Any, Callable[[], Any]]:
    attributes: dict[Any, Callable[[], Any]] = {
        getattr(TuningAttribute, name): partial(io.usage, name) for name in names
    }
    attributes[TuningAttribute.engine] = lambda: info
    attributes[TuningAttribute.configure] = lambda: io.configure
    return attributes


class EngineSocketStream(SocketStream):
    """A TCP stream whose bytes move through the run's engine."""

    def __init__(self, io: StreamIO, engine: Engine) -> None:
        self._io = io
        self._engine_info = engine.info
        self._closed = False
        self._leftovers = current_state().leftovers
        self._leftovers.add(io)  # closed at the end of the run if nobody closes it
        self._receive_guard = ResourceGuard("reading from")
        self._send_guard = ResourceGuard("writing to")

    @property
    def _raw_socket(self) -> socket.socket:
        return self._io.sock

    @property
    def engine_info(self) -> EngineInfo:
        """The engine this stream's bytes go through."""
        return self._engine_info

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {
            **super().extra_attributes,
            **_tuning_attributes(self._io, STREAM_SETTINGS, self._engine_info),
        }

    def _error(self, exc: OSError) -> Exception:
        if self._closed:
            return ClosedResourceError()
        return BrokenResourceError(str(exc))

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool):
            raise TypeError(f"max_bytes must be an integer, not {type(max_bytes).__name__}")
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        with self._receive_guard:
            if self._closed:
                raise ClosedResourceError
            try:
                data = await self._io.receive(max_bytes)
            except OSError as exc:
                raise self._error(exc) from exc
            if data:
                return data
            if self._closed:
                raise ClosedResourceError
            raise EndOfStream

    async def send(self, item: bytes) -> None:
        with self._send_guard:
            if self._closed:
                raise ClosedResourceError
            try:
                await self._io.send(memoryview(item).cast("B"))
            except OSError as exc:
                raise self._error(exc) from exc

    async def send_eof(self) -> None:
        with self._send_guard:
            if self._closed:
                raise ClosedResourceError
            try:
                await self._io.send_eof()
            except OSError as exc:
                raise self._error(exc) from exc

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                await self._io.close()
            except OSError as exc:
                # a write-behind send failed and no operation has reported it yet
                raise BrokenResourceError(str(exc)) from exc
            finally:
                self._leftovers.discard(self._io)
        await trio.lowlevel.checkpoint()


class EngineTCPListener(SocketListener):
    """A TCP listener whose accepts go through the run's engine."""

    def __init__(self, io: ListenerIO, engine: Engine) -> None:
        self._io = io
        self._engine = engine
        self._closed = False
        self._leftovers = current_state().leftovers
        self._leftovers.add(io)
        self._accept_guard = ResourceGuard("accepting connections from")
        #: holds connections back until their first bytes (idletimeout > 0)
        self._gate: IdleGate | None = None

    @property
    def _raw_socket(self) -> socket.socket:
        return self._io.sock

    async def accept(self) -> EngineSocketStream:
        with self._accept_guard:
            if self._closed:
                raise ClosedResourceError
            if self._gate is None and self._io.tuning.idletimeout:
                self._gate = IdleGate(self._io, self._engine)
            try:
                if self._gate is not None:
                    io = await self._gate.accept()
                else:
                    sock = await self._io.accept()
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    io = self._engine.open_stream(sock, self._io.tuning)
            except OSError as exc:
                if self._closed:
                    raise ClosedResourceError from None
                raise BrokenResourceError(str(exc)) from exc
        return EngineSocketStream(io, self._engine)

    def _idle_usage(self) -> Usage:
        if self._gate is not None:
            return self._gate.usage()
        return Usage(self._io.tuning.idletimeout, 0)

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {
            **super().extra_attributes,
            **_tuning_attributes(self._io, LISTENER_SETTINGS, self._engine.info),
            TuningAttribute.idletimeout: self._idle_usage,
        }

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                if self._gate is not None:
                    await self._gate.close()  # connections waiting for first bytes
                await self._io.close()
            finally:
                self._leftovers.discard(self._io)
        await trio.lowlevel.checkpoint()
