"""The listener setting ``idletimeout``: iocpsock 0.2's watchdog.

iocpsock posted ``AcceptEx`` with a receive buffer, so a connection reached
the application only together with its first bytes, and a watchdog closed
connections that never sent any.  A client that connects and stays silent
then costs the server one socket for a bounded time, and no task.

With ``idletimeout`` above 0 a listener does the same, on every engine:

* a gate (one system task per listener, started by the first ``accept()``)
  takes connections from the engine, up to ``backlog`` of them at a time, and
  waits for each one's first bytes, all concurrently;
* a connection whose first bytes arrive goes to ``accept()``, and the stream
  returns those bytes first; one whose peer closes first goes too (it reads
  end of stream);
* a connection that sends nothing within ``idletimeout`` milliseconds is
  closed without the application ever seeing it (counted in ``expired``).

It suits protocols where the client speaks first (HTTP, TLS).  For protocols
where the server speaks first (SMTP, FTP) it must stay 0, its default.
Setting it back to 0 on a live listener hands over new connections at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
from collections import deque
from dataclasses import replace

import trio

from anyio_iocp._interface.engine import Engine, ListenerIO, StreamIO
from anyio_iocp._interface.parking import Spot
from anyio_iocp._interface.settings import Usage
from anyio_iocp._interface.stats import StreamStatistics
from anyio_iocp._interface.yielding import schedule_point_on_budget
from anyio_iocp._streams.nodelay import AcceptedNodelay

_log = logging.getLogger("anyio_iocp")


class FirstBytes(StreamIO):
    """A stream whose first bytes were read by the gate: ``receive`` returns
    them first, everything else goes to the engine's stream."""

    def __init__(self, inner: StreamIO, first: bytes) -> None:
        self._inner = inner
        self._first = first
        self.sock = inner.sock
        # the stream layer counts bytes on this object
        self.bytes_in = self.bytes_out = 0

    # the settings are the engine stream's
    @property
    def sendcap(self) -> int:
        return self._inner.sendcap

    @sendcap.setter
    def sendcap(self, value: int) -> None:
        self._inner.sendcap = value

    @property
    def recvburst(self) -> int:
        return self._inner.recvburst

    @recvburst.setter
    def recvburst(self, value: int) -> None:
        self._inner.recvburst = value

    @property
    def buffersize(self) -> int:
        return self._inner.buffersize

    @buffersize.setter
    def buffersize(self, value: int) -> None:
        self._inner.buffersize = value

    async def receive(self, max_bytes: int) -> bytes:
        if not self._first:
            return await self._inner.receive(max_bytes)
        await trio.lowlevel.checkpoint_if_cancelled()
        data, self._first = self._first[:max_bytes], self._first[max_bytes:]
        return data  # no wait: the stream layer's budget decides on a yield

    def send_at_once(self, data: memoryview) -> int:
        return self._inner.send_at_once(data)

    def check_engine(self) -> None:
        self._inner.check_engine()

    async def send_rest(self, data: memoryview) -> None:
        await self._inner.send_rest(data)

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def flush(self) -> None:
        await self._inner.flush()

    def has_read_ahead(self) -> bool:
        return bool(self._first) or self._inner.has_read_ahead()

    async def close(self) -> None:
        self._first = b""
        await self._inner.close()

    def abandon(self) -> None:
        self._inner.abandon()

    def usage(self, name: str) -> Usage:
        usage = self._inner.usage(name)
        if name == "buffersize":  # bytes held ahead of the reader include the first ones
            return Usage(usage.cap, usage.in_use + len(self._first))
        return usage

    def configure(self, **settings: int) -> None:
        self._inner.configure(**settings)

    def statistics(self) -> StreamStatistics:
        # bytes as the stream layer counted them here; ABD and the
        # write-behind sends are the engine stream's
        return replace(self._inner.statistics(), bytes_in=self.bytes_in, bytes_out=self.bytes_out)


class IdleGate:
    """Accepted connections wait here for their first bytes."""

    def __init__(self, io: ListenerIO, engine: Engine, nodelay: AcceptedNodelay) -> None:
        self._io = io
        self._engine = engine
        self._nodelay = nodelay
        self._ready: deque[StreamIO] = deque()
        self._waiting: set[StreamIO] = set()
        self._error: OSError | None = None
        self._accepter = Spot()  # a task in accept()
        self._gate = Spot()  # the gate, waiting for room
        self._scope = trio.CancelScope()
        self._done = trio.Event()
        self._started = False
        self._closed = False
        #: connections closed because they sent nothing in time
        self.expired = 0

    def usage(self) -> Usage:
        return Usage(self._io.tuning.idletimeout, len(self._waiting))

    # -- the application's side ------------------------------------------------

    async def accept(self) -> StreamIO:
        if not self._started:
            self._started = True
            trio.lowlevel.spawn_system_task(self._run, name="anyio_iocp idle gate")
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._ready:
            if self._error is not None:
                error, self._error = self._error, None
                self._wake_gate()
                raise error
            if self._closed:
                raise OSError(errno.EBADF, "listener closed")
            await self._accepter.wait()
        stream = self._ready.popleft()
        self._wake_gate()  # room for one more
        return stream  # (the listener's budget decides on a schedule point)

    async def close(self) -> None:
        self._closed = True
        self._scope.cancel()
        self._wake_accepter()
        if self._started:
            with trio.CancelScope(shield=True):
                await self._done.wait()

    # -- the gate ----------------------------------------------------------------

    def _wake_accepter(self) -> None:
        self._accepter.wake()

    def _wake_gate(self) -> None:
        self._gate.wake()

    async def _wait_for_accept(self) -> None:
        await self._gate.wait()

    async def _run(self) -> None:
        leftovers = self._engine.leftovers
        # its closes, also as the run ends, wait for the completions of
        # cancelled receives: an engine woken by a system task keeps waking
        # for them while this count is above zero
        leftovers.closing += 1
        try:
            await self._accept_and_watch()
        finally:
            leftovers.closing -= 1

    async def _accept_and_watch(self) -> None:
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    while True:
                        held = len(self._ready) + len(self._waiting)
                        if held >= self._io.tuning.backlog or self._error is not None:
                            await self._wait_for_accept()
                            continue
                        budget = self._engine.budget
                        passes = budget.passes
                        try:
                            sock = await self._io.accept()
                            # a connection that was there: the gate takes
                            # turns on the budget, as a serve() loop does
                            await schedule_point_on_budget(budget, passes)
                        except OSError as exc:
                            self._error = exc  # raised by the next accept()
                            self._wake_accepter()
                            continue
                        try:
                            self._nodelay.apply(sock)
                        except OSError:  # reset already: nothing to hand over
                            sock.close()
                            continue
                        stream = self._engine.open_stream(sock, self._io.tuning)
                        self._waiting.add(stream)
                        nursery.start_soon(self._watch, stream)
        finally:
            self._closed = True
            try:
                with trio.CancelScope(shield=True):
                    while self._ready:
                        with contextlib.suppress(OSError):  # nobody is left to hear it
                            await self._ready.popleft().close()
            finally:
                # close() waits for this, also when a close above failed
                self._wake_accepter()
                self._done.set()

    async def _watch(self, stream: StreamIO) -> None:
        timeout = self._io.tuning.idletimeout / 1000
        first: bytes | None = None
        try:
            if timeout:
                with trio.move_on_after(timeout):
                    first = await stream.receive(stream.buffersize)
            else:
                first = b""
        except OSError:
            pass  # reset before sending anything: nothing for the application
        finally:
            self._waiting.discard(stream)
            if first is None or self._closed:
                if first is None and not self._closed:
                    self.expired += 1
                    _log.debug("closed a connection that sent nothing within idletimeout")
                with trio.CancelScope(shield=True), contextlib.suppress(OSError):
                    await stream.close()
        if first is not None and not self._closed:
            self._ready.append(FirstBytes(stream, first) if first else stream)
            self._wake_accepter()
