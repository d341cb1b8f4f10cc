"""The readiness engine: non-blocking socket calls plus Trio's readiness waits.

This is the model of epoll/kqueue: ask the socket; when it answers "would
block", wait until Trio says the socket is ready, then ask again.  It runs
wherever Python and Trio do, and gives the same stream semantics as the
completion engines.  Nothing is ever handed to the kernel ahead of time, so a
cancelled wait has taken no data and sent nothing.

The settings keep their meaning where a readiness model can give them one:

* ``recvburst``: after a read that filled its whole buffer, up to ``k - 1``
  more buffers are read ahead at once (Automatic Burst Detection moves ``k``
  exactly as on the completion engines); ``in use`` is the number of buffers
  read ahead and not yet taken.
* ``sendcap``: with ``sendcap > 1`` a send that cannot go out at once is queued
  and ``send()`` returns while fewer than ``sendcap`` are queued; a system task
  writes the queue out as the socket becomes writable.
* ``backlog``: when a connection arrives, up to ``backlog`` connections are
  accepted at once into a queue that ``accept()`` takes from.
"""

from __future__ import annotations

import contextlib
import socket
from collections import deque
from typing import Any

import trio
from trio import lowlevel  # (faster than trio.lowlevel: see _streams/__init__.py)

from anyio_iocp._flow.accept_backoff import EXHAUSTION, AcceptBackoff
from anyio_iocp._flow.look_after_send import LooksAfterSends
from anyio_iocp._flow.read_ahead import take_ready
from anyio_iocp._flow.send_chain import CLOSE_DRAIN_SECONDS, WriteBehind
from anyio_iocp._flow.stream_base import FlowStream
from anyio_iocp._flow.yield_first import looked_again, should_yield_first
from anyio_iocp._interface import trace as _trace
from anyio_iocp._interface.budget import ScheduleBudget
from anyio_iocp._interface.cancel_points import cancel_pending
from anyio_iocp._interface.connecting import connect_stream
from anyio_iocp._interface.engine import (
    Engine,
    EngineInfo,
    ListenerIO,
    StreamIO,
    set_nonblocking,
)
from anyio_iocp._interface.readiness import wait_readable, wait_writable
from anyio_iocp._interface.settings import Tuning, Usage
from anyio_iocp._interface.stats import EngineCounters
from anyio_iocp._interface.yielding import shielded_yield


class ReadinessStreamIO(WriteBehind, FlowStream):
    def __init__(self, sock: socket.socket, tuning: Tuning, engine: ReadinessEngine) -> None:
        set_nonblocking(sock)
        self._init_flow(sock, tuning, engine.counters)
        self._engine = engine  # its budget: whether a receive yields before it waits
        self._ready: list[bytes] = []  # read ahead in a burst (read_ahead.py)
        self._eof = False
        self._recv_error: OSError | None = None
        self._queued: deque[memoryview] = deque()
        self._init_write_behind()
        self._writer_running = False

    # -- settings -------------------------------------------------------------

    def usage(self, name: str) -> Usage:
        if name == "sendcap":
            return Usage(self.sendcap, len(self._queued))
        if name == "recvburst":
            return Usage(self.recvburst, len(self._ready))
        if name == "buffersize":
            return Usage(self.buffersize, sum(map(len, self._ready)))
        raise ValueError(f"unknown stream setting {name!r}")

    # -- receiving ------------------------------------------------------------

    def has_read_ahead(self) -> bool:
        return bool(self._ready)

    def _read_ahead(self) -> None:
        """During a burst, read up to k - 1 more buffers that are already there."""
        sock, size = self.sock, self.buffersize
        while len(self._ready) < self.abd.k - 1:
            try:
                data = sock.recv(size)
            except BlockingIOError:
                return
            except OSError as exc:
                self._recv_error = exc
                return
            self.counters.direct_recv += 1
            if not data:
                self._eof = True
                return
            self._ready.append(data)
            self.abd.observe(len(data) == size)
            if len(data) < size:
                return

    async def receive(self, max_bytes: int) -> bytes:
        if cancel_pending():  # (first: a Cancelled loses no error)
            await lowlevel.checkpoint_if_cancelled()
        self._raise_unreported_send_error()  # a write-behind send failed
        if self._ready:
            data = take_ready(self._ready, max_bytes, self.buffersize)
        elif self._recv_error is not None:
            # the stream stays broken (a reset socket reads as EOF); raised again
            # each call, so without the traceback of the last time
            raise self._recv_error.with_traceback(None)
        elif self._eof:
            self._check_send_error()  # a reset seen by a send: not a clean end
            data = b""
        else:
            size = self.buffersize  # (min(), spelled out: it costs 5x as much)
            if max_bytes < size:
                size = max_bytes
            engine = self._engine
            # right after this stream's send, the run's record says whether
            # to look first, and is told what the look found (look_after_send)
            look = True
            after_send = self.send_pass == engine.budget.passes
            if after_send:
                after_send = look = engine.looks.look()
            #: None until it would wait; then whether it yielded to look again
            looking: bool | None = None
            while True:
                if look:
                    try:
                        data = self.sock.recv(size)
                    except BlockingIOError:
                        self._check_send_error()
                        if after_send:
                            engine.looks.found(False)
                            after_send = False
                    except OSError as exc:
                        self._recv_error = exc
                        raise
                    else:
                        break
                look = True
                if looking is None:
                    looking = not engine.budget.strict and should_yield_first(self)
                    if looking:
                        # the peer may answer during one scheduler pass (yield_first)
                        await shielded_yield()
                        continue
                elif looking:
                    looked_again(self, False)
                    looking = False
                self.counters.waits += 1
                await wait_readable(self.sock)
            if after_send:
                engine.looks.found(True)
            elif looking:
                looked_again(self, True)
            self.counters.direct_recv += 1
            if data:
                self.abd.observe(len(data) == self.buffersize)
                if len(data) == self.buffersize and self.abd.k > 1:
                    self._read_ahead()
            else:
                # after a reset that a write-behind send consumed, the
                # socket reads as end of stream: report the reset instead
                self._check_send_error()
            return data
        return data  # no wait: the stream layer's budget decides on a yield

    # -- sending --------------------------------------------------------------

    def _pending_sends(self) -> int:
        return len(self._queued)

    def send_at_once(self, data: memoryview) -> int:
        # (after the caller's cancel check: a Cancelled loses no error)
        self._check_send_error()
        if self._queued or self.sendcap > 1:
            return 0  # (send_rest: in order behind them, or within sendcap)
        # the pass this call began in, for send_pass: a receive in the same
        # pass may skip its first look (look_after_send); after a send that
        # waited, the receive is in a later pass and looks (as after
        # SendChain._send_now, which also stamps before any wait)
        self.send_pass = self._engine.budget.passes
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            return 0
        self.counters.direct_send += 1
        return sent  # all of it: no wait, the stream layer's budget decides

    async def send_rest(self, data: memoryview) -> None:
        self._check_send_error()
        sock = self.sock
        passes = self._engine.budget.passes  # (send_pass: as in send_at_once)
        # with sendcap 1 and nothing queued, send_at_once tried the socket a
        # moment ago, and it was full: wait before the next try
        wait_first = self.sendcap == 1 and not self._queued
        if self._queued and self.sendcap == 1:
            # write-behind sends of an earlier sendcap go first, then this one
            # is sent in full before send() returns, as sendcap 1 promises
            await self._wait_sends_below(1)
            self._check_send_error()
            self._check_not_closing()
        if self.sendcap > 1:
            await self._wait_sends_below(self.sendcap)
            self._check_send_error()
            self._check_not_closing()
            if not self._queued:
                self.send_pass = passes
                with contextlib.suppress(BlockingIOError):
                    data = data[sock.send(data) :]
                    self.counters.direct_send += 1
            if data:
                owned = data if isinstance(data.obj, bytes) else memoryview(bytes(data))
                self._queued.append(owned)
                self._queued_send(len(owned))
                if not self._writer_running:
                    self._writer_running = True
                    lowlevel.spawn_system_task(self._write_queued, name="anyio_iocp write-behind")
            return  # no wait (or waited above): the stream layer's budget decides
        counters = self.counters
        self.send_pass = passes
        while data:
            if wait_first:
                counters.waits += 1
                await wait_writable(sock)
            try:
                sent = sock.send(data)
            except BlockingIOError:
                wait_first = True
            else:
                counters.direct_send += 1
                data = data[sent:]
                wait_first = False

    async def _write_queued(self) -> None:
        """Writes queued sends out as the socket becomes writable (system task)."""
        sock = self.sock
        counters = self.counters
        written = 0  # of the send at the head of the queue
        try:
            while self._queued:
                head = self._queued[0]
                try:
                    sent = sock.send(head)
                except BlockingIOError:
                    counters.waits += 1
                    await wait_writable(sock)
                    continue
                counters.direct_send += 1
                written += sent
                if sent < len(head):
                    self._queued[0] = head[sent:]
                    continue
                self._queued.popleft()
                if _trace.active:
                    self._trace_send_completed(written)
                written = 0
                self._wake_sender()
        except OSError as exc:
            if not self._closing:
                self._send_error = exc
            self._queued.clear()
        except trio.Cancelled:
            # the run is ending: nothing more will be written
            self._queued.clear()
        finally:
            self._writer_running = False
            self._wake_sender()

    # -- closing --------------------------------------------------------------

    async def close(self) -> None:
        try:
            if self._queued and self._send_error is None:
                with trio.move_on_after(CLOSE_DRAIN_SECONDS):
                    await self._wait_sends_below(1)
        finally:
            self._closing = True
            self._wake_sender()  # a sender waiting for room learns of the close
            self._queued.clear()
            lowlevel.notify_closing(self.sock)
            self.sock.close()
        self._raise_unreported_send_error()


class ReadinessListenerIO(ListenerIO):
    def __init__(self, sock: socket.socket, tuning: Tuning, counters: EngineCounters) -> None:
        set_nonblocking(sock)
        self.sock = sock
        self.tuning = tuning
        self._counters = counters
        self._queue: deque[socket.socket] = deque()
        self._backoff = AcceptBackoff(f"listener {sock.getsockname()!r}", counters)

    def queued(self) -> int:
        return len(self._queue)

    def _accept_ahead(self) -> None:
        while len(self._queue) < self.tuning.backlog:
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # EMFILE and the like: report them from accept(), not from here
                return
            self._counters.direct_accept += 1
            self._queue.append(conn)

    async def accept(self) -> socket.socket:
        await lowlevel.checkpoint_if_cancelled()
        counters = self._counters
        if self._queue:
            # no wait: the stream layer's budget decides on a schedule point
            counters.accept_hits += 1
            return self._queue.popleft()
        waited = False
        while True:
            try:
                conn, _addr = self.sock.accept()
            except BlockingIOError:
                if not waited:
                    waited = True
                    counters.accept_waits += 1
                counters.waits += 1
                await wait_readable(self.sock)
                continue
            except OSError as exc:
                if exc.errno not in EXHAUSTION:
                    raise
                # out of descriptors: pause with back-off (see accept_backoff)
                self._backoff.failed(exc.errno)
                await trio.sleep(self._backoff.pause())
                continue
            if not waited:
                counters.accept_hits += 1  # a connection was there already
            counters.direct_accept += 1
            self._backoff.succeeded()
            self._accept_ahead()
            return conn  # (waited or not: as above)

    def abandon(self) -> None:
        while self._queue:
            self._queue.popleft().close()
        self.sock.close()

    async def close(self) -> None:
        while self._queue:
            self._queue.popleft().close()
        lowlevel.notify_closing(self.sock)
        self.sock.close()


class ReadinessEngine(Engine):
    def __init__(self, info: EngineInfo) -> None:
        self.info = info
        self.counters = EngineCounters()
        self.budget = ScheduleBudget()
        #: what looks right after a send found (look_after_send)
        self.looks = LooksAfterSends()

    def after_io_wait(self) -> None:
        self.counters.passes += 1
        self.budget.new_pass()

    def open_stream(self, sock: socket.socket, tuning: Tuning) -> StreamIO:
        self.counters.streams += 1
        return ReadinessStreamIO(sock, tuning, self)

    def open_listener(self, sock: socket.socket, tuning: Tuning) -> ListenerIO:
        self.counters.listeners += 1
        return ReadinessListenerIO(sock, tuning, self.counters)

    async def connect(self, sock: socket.socket, address: Any) -> None:
        # (anyio_iocp._interface.connecting: a handshake that is over when
        # connect() returns, as on loopback, is not waited for)
        await connect_stream(sock, address, self.budget, self.counters, self._wait_connect)

    async def _wait_connect(self, sock: socket.socket) -> None:
        self.counters.waits += 1
        await wait_writable(sock)
