"""AnyIO socket streams and listeners on top of any engine.

This layer is written once: it gives AnyIO's semantics (resource guards,
``EndOfStream``, ``BrokenResourceError`` with the OS error as cause,
``ClosedResourceError``, typed attributes) to whatever engine moves the bytes.

It also decides the schedule points: an engine's ``receive()`` is a cancel
point, a send makes its cancel check here before the engine's two steps,
and either returns at once when it did not have to wait; here, such a call
yields only when the run's budget has run out, or (a send) when the
stream has sent the budget's bytes since its last schedule point (every call
in strict mode).  The model and its guarantees: :mod:`anyio_iocp._interface.budget`.
"""

from __future__ import annotations

import array
import socket
from collections.abc import Callable, Collection, Mapping
from functools import partial
from io import IOBase
from time import perf_counter
from typing import Any, NoReturn

from anyio import (
    BrokenResourceError,
    BusyResourceError,
    ClosedResourceError,
    EndOfStream,
    ResourceGuard,
)
from anyio.abc import SocketListener, SocketStream, TaskGroup, UNIXSocketStream
from trio import lowlevel  # (faster than trio.lowlevel: see _streams/__init__.py)

from anyio_iocp._interface.budget import ScheduleBudget
from anyio_iocp._interface.cancel_points import cancel_pending
from anyio_iocp._interface.engine import (
    AF_UNIX,
    Engine,
    EngineInfo,
    ListenerIO,
    MessageIO,
    StreamIO,
    raw_family,
)
from anyio_iocp._interface.settings import LISTENER_SETTINGS, STREAM_SETTINGS, Usage
from anyio_iocp._interface.yielding import schedule_point_on_budget, shielded_yield
from anyio_iocp._internals.anyio_backend import check_nursery_reach
from anyio_iocp._streams.attributes import StatisticsAttribute, TuningAttribute
from anyio_iocp._streams.idle import IdleGate
from anyio_iocp._streams.nodelay import AcceptedNodelay
from anyio_iocp._streams.serving import serve_connections


def _tuning_attributes(
    io: StreamIO | ListenerIO, names: tuple[str, ...], info: EngineInfo
) -> dict[Any, Callable[[], Any]]:
    attributes: dict[Any, Callable[[], Any]] = {
        getattr(TuningAttribute, name): partial(io.usage, name) for name in names
    }
    attributes[TuningAttribute.engine] = lambda: info
    attributes[TuningAttribute.configure] = lambda: io.configure
    if isinstance(io, StreamIO):
        attributes[StatisticsAttribute.stream] = io.statistics
    return attributes


async def schedule_point_unless_waited(budget: ScheduleBudget, passes: int) -> None:
    """Before a call that is a schedule point every time (descriptors,
    datagrams) raises: one, unless it waited (the budget's pass
    count moved from ``passes``), as when it succeeds.  Shielded: a Cancelled
    must not replace the error."""
    if budget.passes == passes:
        await shielded_yield()


class _Guard:
    """AnyIO's ResourceGuard (one task at a time per direction), in a form that
    the per-message paths check inline instead of through two method calls."""

    __slots__ = ("action", "busy")

    def __init__(self, action: str) -> None:
        self.action = action
        self.busy = False

    def __enter__(self) -> None:
        if self.busy:
            raise BusyResourceError(self.action)
        self.busy = True

    def __exit__(self, *exc_info: object) -> None:
        self.busy = False


class EngineSocketStream(SocketStream):
    """A TCP stream whose bytes move through the run's engine."""

    #: (until __init__ has registered the stream, there is nothing to close)
    _closed = True

    def __init__(self, io: StreamIO, engine: Engine) -> None:
        self._io = io
        self._engine = engine
        self._engine_info = engine.info
        self._closed = False
        self._leftovers = engine.leftovers
        self._leftovers.add(io)  # closed at the end of the run if nobody closes it
        self._receive_guard = _Guard("reading from")
        self._send_guard = _Guard("writing to")
        #: when a call that did not wait yields (the run's, or a strict one)
        self._budget = engine.budget
        #: bytes sent since the stream's last schedule point (its byte budget)
        self._sent_since_yield = 0

    def __del__(self) -> None:
        if not self._closed:  # dropped without aclose(): the run closes it now
            self._leftovers.dropped(self._io)

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
        if type(max_bytes) is not int and (
            not isinstance(max_bytes, int) or isinstance(max_bytes, bool)
        ):
            raise TypeError(f"max_bytes must be an integer, not {type(max_bytes).__name__}")
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        guard = self._receive_guard  # `with guard:`, inlined (once per message)
        if guard.busy:
            raise BusyResourceError(guard.action)
        guard.busy = True
        try:
            io = self._io
            budget = self._budget
            passes = budget.passes
            try:
                if self._closed:
                    await lowlevel.checkpoint_if_cancelled()  # (a cancel point, as every call)
                    raise ClosedResourceError
                data = await io.receive(max_bytes)
            except Exception as exc:  # (not Cancelled, a BaseException)
                # the error is decided before the schedule point: a close by
                # another task meanwhile must not turn a reset into "closed"
                error = self._error(exc) if isinstance(exc, OSError) else exc
                await self._schedule_point_before_raising(passes)
                if error is exc:
                    raise
                raise error from exc
            if budget.passes != passes:  # it waited: a schedule point
                self._sent_since_yield = 0
            elif perf_counter() >= budget.deadline:
                # it did not wait, and the budget has run out: a schedule point
                self._sent_since_yield = 0
                await shielded_yield()
            if data:
                io.bytes_in += len(data)
                return data
            if self._closed:
                raise ClosedResourceError
            raise EndOfStream
        finally:
            guard.busy = False

    async def send(self, item: bytes) -> None:
        guard = self._send_guard  # `with guard:`, inlined (once per message)
        if guard.busy:
            raise BusyResourceError(guard.action)
        guard.busy = True
        try:
            view = memoryview(item)
            if type(item) is not bytes and (  # (bytes are one flat run of bytes)
                view.format != "B" or view.ndim != 1 or not view.c_contiguous
            ):
                view = view.cast("B")
            io = self._io
            budget = self._budget
            passes = budget.passes
            try:
                if cancel_pending():  # (a cancel point first, as every call)
                    io.check_engine()  # (a stream kept past its run says so first)
                    await lowlevel.checkpoint_if_cancelled()
                if self._closed:
                    raise ClosedResourceError
                # The engine's send in its two steps: no coroutine for a send
                # that does not wait (the usual case).  An empty send moves
                # nothing and asks the engine nothing, as on AnyIO's backends.
                sent = len(view)
                if sent:
                    went = io.send_at_once(view)
                    if went != sent:
                        await io.send_rest(view[went:])
            except Exception as exc:  # (not Cancelled, a BaseException)
                error = self._error(exc) if isinstance(exc, OSError) else exc  # (as in receive)
                await self._schedule_point_before_raising(passes)
                if error is exc:
                    raise
                raise error from exc
            io.bytes_out += sent
            if budget.passes != passes:  # it waited: a schedule point
                self._sent_since_yield = 0
            else:
                unyielded = self._sent_since_yield + sent
                if unyielded >= budget.byte_budget or (
                    perf_counter() >= budget.deadline
                    and not budget.send_may_defer(lowlevel.current_task())
                ):
                    # the stream sent its byte budget, or the run's time is
                    # used up and the task's schedule point cannot be left to
                    # its next call: one now
                    self._sent_since_yield = 0
                    await shielded_yield()
                else:
                    self._sent_since_yield = unyielded
        finally:
            guard.busy = False

    async def _schedule_point_before_raising(self, passes: int) -> None:
        """A call about to raise: if it did not wait (the budget's pass
        count is still ``passes``) and the budget has run out (every time in
        strict mode), a schedule point, as for a call that returns.  A task
        that retries a call failing at once (a closed or broken stream) must
        not hold the run past the budget.  Shielded: the error may carry a
        write-behind send's failure, which a Cancelled in its place would lose."""
        budget = self._budget
        if budget.passes == passes and perf_counter() >= budget.deadline:
            self._sent_since_yield = 0
            await shielded_yield()

    async def send_eof(self) -> None:
        with self._send_guard:
            # a cancel point before the shutdown, and a schedule point after
            # it (also when it fails), as in Trio (once per stream: not worth
            # a budget)
            await lowlevel.checkpoint_if_cancelled()
            try:
                if self._closed:
                    raise ClosedResourceError
                await self._io.send_eof()
            except Exception as exc:  # (not Cancelled, a BaseException)
                error = self._error(exc) if isinstance(exc, OSError) else exc  # (as in receive)
                await shielded_yield()
                if error is exc:
                    raise
                raise error from exc
            await shielded_yield()

    async def _close_io(self) -> None:
        await self._io.close()

    async def aclose(self) -> None:
        # A cancel point after the close (which happens even when cancelled,
        # as in Trio), and a schedule point on the budget, as for the other
        # stream calls: unless the close waited, it yields only once the
        # budget has run out (every time in strict mode).  A short
        # connection's task then ends without a trip through the scheduler
        # (docs/performance.md, "A stream's close on the budget").
        budget = self._budget
        passes = budget.passes
        if not self._closed:
            self._closed = True
            try:
                await self._close_io()
            except OSError as exc:
                # a write-behind send failed and no operation has reported it yet
                raise BrokenResourceError(str(exc)) from exc
            finally:
                self._leftovers.discard(self._io)
        await lowlevel.checkpoint_if_cancelled()
        await schedule_point_on_budget(budget, passes)


class EngineUNIXSocketStream(EngineSocketStream, UNIXSocketStream):
    """A UNIX stream through the run's engine; descriptors travel as messages.

    Descriptors ride on the bytes they were sent with, and a plain receive
    drops them: with ``recvburst > 1`` bytes received ahead lose theirs, so
    streams that pass descriptors keep the default ``recvburst`` of 1 (and
    engines that read several buffers per call during a burst, as IOCP's
    TCP streams do, must not run UNIX streams so).
    """

    _messages: MessageIO | None = None

    def _message_io(self) -> MessageIO:
        if self._messages is None:
            self._messages = self._engine.open_messages(self._io.sock)
        return self._messages

    async def _fail_after_schedule_point(self, exc: Exception, passes: int) -> NoReturn:
        """Raise for a descriptor call that failed: the error is decided
        first (a close meanwhile must not hide it), then the call's schedule
        point, unless it waited."""
        error = self._error(exc) if isinstance(exc, OSError) else exc
        await schedule_point_unless_waited(self._budget, passes)
        if error is exc:
            raise exc
        raise error from exc

    async def receive_fds(self, msglen: int, maxfds: int) -> tuple[bytes, list[int]]:
        if not isinstance(msglen, int) or msglen < 0:
            raise ValueError("msglen must be a non-negative integer")
        if not isinstance(maxfds, int) or maxfds < 1:
            raise ValueError("maxfds must be a positive integer")
        fds = array.array("i")
        ancdata: list[tuple[int, int, bytes]]
        with self._receive_guard:
            passes = self._budget.passes
            try:
                if self._closed:
                    await lowlevel.checkpoint_if_cancelled()
                    raise ClosedResourceError
                if self._io.has_read_ahead():
                    # bytes already taken from the socket come first, in order
                    message, ancdata = await self._io.receive(max(msglen, 1)), []
                    if self._budget.passes == passes:
                        await shielded_yield()
                else:
                    message, ancdata, _flags, _address = await self._message_io().receive_msg(
                        msglen, socket.CMSG_SPACE(maxfds * fds.itemsize)
                    )
            except Exception as exc:  # (not Cancelled, a BaseException)
                await self._fail_after_schedule_point(exc, passes)
        if not message and not ancdata:
            if self._closed:
                raise ClosedResourceError
            raise EndOfStream
        self._io.bytes_in += len(message)
        for level, kind, data in ancdata:
            if level != socket.SOL_SOCKET or kind != socket.SCM_RIGHTS:
                raise RuntimeError(
                    f"unexpected ancillary data: level {level}, type {kind} "
                    f"(expected SOL_SOCKET, SCM_RIGHTS); message = {message!r}"
                )
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        return message, list(fds)

    async def send_fds(self, message: bytes, fds: Collection[int | IOBase]) -> None:
        if not message:
            raise ValueError("message must not be empty")
        if not fds:
            raise ValueError("fds must not be empty")
        filenos = [fd if isinstance(fd, int) else fd.fileno() for fd in fds]
        ancdata = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", filenos).tobytes())]
        view = memoryview(message).cast("B")
        with self._send_guard:
            passes = self._budget.passes
            try:
                if self._closed:
                    await lowlevel.checkpoint_if_cancelled()
                    raise ClosedResourceError
                await self._io.flush()  # bytes sent before go first
                while view:
                    sent = await self._message_io().send_msg(view, ancdata, None)
                    self._io.bytes_out += sent
                    view = view[sent:]
                    ancdata = []  # the descriptors went with the first bytes
            except Exception as exc:  # (not Cancelled, a BaseException)
                await self._fail_after_schedule_point(exc, passes)

    async def _close_io(self) -> None:
        if self._messages is not None:
            await self._messages.close(close_socket=False)
        await self._io.close()


def _stream_class(sock: socket.socket) -> type[EngineSocketStream]:
    if raw_family(sock) == AF_UNIX:
        return EngineUNIXSocketStream
    return EngineSocketStream


class EngineTCPListener(SocketListener):
    """A TCP (or UNIX) listener whose accepts go through the run's engine."""

    _closed = True  # (as EngineSocketStream's)

    def __init__(self, io: ListenerIO, engine: Engine, nodelay: AcceptedNodelay) -> None:
        self._io = io
        self._engine = engine
        self._closed = False
        self._leftovers = engine.leftovers
        self._leftovers.add(io)
        self._accept_guard = ResourceGuard("accepting connections from")
        #: TCP_NODELAY for accepted connections (set on the listener, where inherited)
        self._nodelay = nodelay
        #: holds connections back until their first bytes (idletimeout > 0)
        self._gate: IdleGate | None = None
        # the check serve() needs, done once here rather than at a first
        # connection (it reads AnyIO's version: _streams/serving.py)
        check_nursery_reach()

    def __del__(self) -> None:
        if not self._closed:  # dropped without aclose(): the run closes it now
            gate = self._gate
            self._leftovers.dropped(self._io, gate.close if gate is not None else None)

    @property
    def _raw_socket(self) -> socket.socket:
        return self._io.sock

    async def accept(self) -> EngineSocketStream:
        with self._accept_guard:
            budget = self._engine.budget
            passes = budget.passes
            try:
                if self._closed:
                    await lowlevel.checkpoint_if_cancelled()
                    raise ClosedResourceError
                if self._gate is None and self._io.tuning.idletimeout:
                    self._gate = IdleGate(self._io, self._engine, self._nodelay)
                if self._gate is not None:
                    io = await self._gate.accept()
                else:
                    sock = await self._io.accept()
                    try:
                        self._nodelay.apply(sock)
                        io = self._engine.open_stream(sock, self._io.tuning)
                    except BaseException:
                        sock.close()  # never handed over: closed now, not by the collector
                        raise
            except Exception as exc:  # (not Cancelled, a BaseException)
                # a schedule point as when it succeeds (below)
                closed = self._closed
                await schedule_point_on_budget(budget, passes)
                if not isinstance(exc, OSError):
                    raise
                if closed:
                    raise ClosedResourceError from None
                raise BrokenResourceError(str(exc)) from exc
            stream = _stream_class(io.sock)(io, self._engine)
            # On the budget, as a stream call: an accept that took a connection
            # already there yields only once the budget has run out (every
            # time in strict mode).  A serve() loop then takes a burst of
            # connections within one budget, not one per scheduler pass
            # (docs/performance.md, "Accepts on the budget").
            await schedule_point_on_budget(budget, passes)
        return stream

    async def serve(
        self, handler: Callable[[SocketStream], Any], task_group: TaskGroup | None = None
    ) -> None:
        """AnyIO's ``serve()``, without the task handle it makes per
        connection and drops (:mod:`anyio_iocp._streams.serving`)."""
        await serve_connections(self, handler, task_group)

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
        await lowlevel.checkpoint()
