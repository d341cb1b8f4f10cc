"""The receive side of a completion engine's stream, written once: a pool of
receives posted ahead of the reader, with Automatic Burst Detection.

``receive()`` first takes bytes already received ahead, then bytes the socket
already holds (a direct non-blocking ``recv``: nothing is posted when data is
waiting), and only when there are none it posts ``k`` receives and waits for
the first.  ``k`` comes from the stream's
:class:`~anyio_iocp._flow.abd.BurstDetector`.  Receives complete in the order
they were posted (the engine makes sure of it: io_uring links them into one
chain, Windows fills overlapped receives of a stream socket in order), and
:meth:`ReceivePool._collect` moves them, in that order, into the read-ahead
queue: their bytes, the end of stream, or the first receive error.  While a
burst lasts, the next ``k`` receives are posted as soon as the reader has taken
what the previous ones brought, ahead of the next ``receive()``; a new pool is
posted only once the previous one has completed entirely.  Bytes held ahead of
the reader are therefore bounded by ``k * buffersize`` (by
``max(k, burst_read_buffers - 1) * buffersize`` with the reads of several
buffers below).

A cancelled ``receive()`` leaves its receives posted: their bytes go to the
next ``receive()``.

Reading several buffers at once: while a burst is under way (the last receive
came back full) and nothing is posted ahead, a direct look asks the socket for
up to ``burst_read_buffers`` buffers in one call, where the engine sets it
above 1.  The bytes beyond the first buffer go to the read-ahead queue, cut
into pieces of ``min(max_bytes, buffersize)``, ahead of anything posted later,
so up to ``burst_read_buffers - 1`` buffers wait there.  Such a read is full
when it filled all it asked for; one that drains the socket ends the burst.
On the IOCP engine each call is a request to the kernel (under Wine three
round trips to the wineserver, whatever its size), so four buffers in one call
cost a quarter of the calls of a bulk transfer; io_uring's direct call is a
plain system call, and it reads one buffer.  (Reading ahead would drop the
descriptors a UNIX stream's bytes carry: the IOCP engine runs no UNIX streams.)

The engine's stream supplies the primitives: :meth:`ReceivePool._post_receives`
(post up to ``k`` receives, in order), :meth:`ReceivePool._receive_outcome`
(what a completed receive brought) and :meth:`ReceivePool._receive_cancelled`
(the platform's error for a receive cut off by ``close()``).  Everything here
is on the path of every ``receive()``: the attributes are read directly and
the per-message work is kept flat.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from typing import Any, ClassVar

from trio import lowlevel  # (faster than trio.lowlevel: see _streams/__init__.py)

from anyio_iocp._flow.look_after_send import MAX_CREDIT as LOOKS_MAX_CREDIT
from anyio_iocp._flow.read_ahead import take_ready
from anyio_iocp._flow.send_chain import CompletionEngine, WriteBehind
from anyio_iocp._flow.stream_base import FlowStream
from anyio_iocp._flow.yield_first import looked_again, should_yield_first
from anyio_iocp._interface.cancel_points import cancel_pending
from anyio_iocp._interface.engine import lost_bytes_error
from anyio_iocp._interface.settings import Usage
from anyio_iocp._interface.yielding import shielded_yield


class ReceivePool(WriteBehind, FlowStream):
    #: the engine: waits for one posted receive
    _engine: CompletionEngine
    #: buffers a direct look reads in one call during a burst (the engine's;
    #: 1: one buffer, as outside bursts)
    burst_read_buffers: ClassVar[int] = 1

    def _init_receive_pool(self) -> None:
        # lists, not deques: they hold a few items, and an empty deque costs
        # 760 bytes, which 10,000 idle connections would feel
        #: receives posted and not yet collected, oldest first
        self._posted: list[Any] = []
        #: bytes received ahead of the reader, in order
        self._ready: list[bytes] = []
        self._eof = False
        #: the first receive error (the stream stays broken)
        self._recv_error: OSError | None = None

    # -- the engine's primitives ----------------------------------------------

    @abstractmethod
    def _post_receives(self, count: int) -> None:
        """Post up to ``count`` receives of ``buffersize`` bytes that complete
        in order, appending them to ``_posted``: at least one, or raise."""

    @abstractmethod
    def _receive_outcome(self, op: Any) -> bytes | OSError | None:
        """What the completed receive ``op`` brought: its bytes, ``b""`` at end
        of stream, its error, or None if it was cancelled (by ``close()``, or
        because an earlier receive of the pool failed)."""

    @abstractmethod
    def _receive_cancelled(self) -> OSError:
        """The error of a receive whose posted receives were all cancelled."""

    def _may_post_ahead(self) -> bool:
        """Asked last, during a burst: no other receiver of the stream holds
        bytes or waits (io_uring's multishot receive)."""
        return True

    # -- receiving ------------------------------------------------------------

    async def receive(self, max_bytes: int) -> bytes:
        if self._engine.closed:
            self._engine.check_open()  # a stream kept past its run: a clear error
        if self._send_error is not None:  # a write-behind send failed
            await self._raise_unreported_send_error_after_cancel_check()
        posted = self._posted
        if not self._ready and posted and not posted[0].done:
            await self._engine.wait(posted[0])
            self._collect()
            return self._take(max_bytes)
        if cancel_pending():
            await lowlevel.checkpoint_if_cancelled()
        self._collect()
        if not (self._ready or posted or self._eof or self._recv_error):
            now = self._first_look(max_bytes)
            if now is None:
                if not self._engine.budget.strict and should_yield_first(self):
                    # the peer may answer during one scheduler pass (yield_first)
                    await shielded_yield()
                    now = self._recv_now(max_bytes)
                    looked_again(self, now is not None)
                    if now is not None:
                        return now
                return await self._receive_posted(max_bytes)
            return now  # no wait: the stream layer's budget decides on a yield
        return self._take(max_bytes)

    def _first_look(self, max_bytes: int) -> bytes | None:
        """A receive's first look, with nothing held or posted: a direct recv
        (:meth:`_recv_now`), unless it comes right after this stream's send
        and the run's record says such looks find nothing (look_after_send);
        None when it found nothing or did not look."""
        engine = self._engine
        if self.send_pass != engine.budget.passes:
            return self._recv_now(max_bytes)
        looks = engine.looks
        if looks.credit > 0 or looks.probe():  # (looks.look(), inlined)
            now = self._recv_now(max_bytes)
            if now is None or looks.credit < LOOKS_MAX_CREDIT:  # (at the cap a hit changes nothing)
                looks.found(now is not None)
            return now
        return None

    def _recv_now(self, max_bytes: int) -> bytes | None:
        """A direct non-blocking recv: the bytes (``b""`` at end of stream),
        or None when the socket holds none yet."""
        size = self.buffersize
        cap = max_bytes if max_bytes < size else size  # (min(), spelled out: it costs 5x as much)
        abd = self.abd
        try:
            asked = cap * self.burst_read_buffers if abd.bursting else cap
            data = self.sock.recv(asked)
        except BlockingIOError:
            self._check_send_error()
            return None
        except OSError as exc:
            # the stream stays broken: a reset socket would read as end of
            # stream next time (as the posted receives' errors, _collect)
            self._recv_error = exc
            raise
        self.counters.direct_recv += 1
        if data:
            n = len(data)
            # full: the call filled what it asked for, and at least one buffer
            # (a read that drains the socket ends the burst)
            abd.observe(n == asked and n >= size)
            if n > cap:  # several buffers in one call (burst_read_buffers)
                data = self._keep_ahead(data, cap)
            elif abd.bursting and abd.k > 1:  # (checked here: this runs once per message)
                self._post_ahead()  # a burst: k receives ahead
        else:
            self._eof = True
            self._check_send_error()  # a reset that a send reported first
        return data

    def _keep_ahead(self, data: bytes, cap: int) -> bytes:
        """The first ``cap`` bytes of a direct read of several buffers; the
        rest waits in the read-ahead queue, in pieces of ``cap`` bytes (the
        queue is empty: a direct look is made only when nothing is held or
        posted)."""
        ready = self._ready
        assert not ready, "a direct look with bytes held: they would be overtaken"
        try:
            first = data[:cap]
            ready.extend([data[start : start + cap] for start in range(cap, len(data), cap)])
        except MemoryError as exc:
            # the bytes were read from the socket: the stream cannot go on
            # without them, so it is broken from here on
            self._lose_read(exc)
            raise
        return first

    def _lose_read(self, exc: BaseException) -> None:
        """Bytes read from the socket could not be kept: the stream's
        receives fail from now on (bytes queued before them come first)."""
        if self._recv_error is None:
            self._recv_error = lost_bytes_error(exc)

    async def _receive_posted(self, max_bytes: int) -> bytes:
        """Post receives with buffers of their own and wait for the first."""
        self._post_pool()
        await self._engine.wait(self._posted[0])
        self._collect()
        return self._take(max_bytes)

    def _post_pool(self) -> None:
        self._check_not_closing()
        self._post_receives(self.abd.k)

    def _post_ahead(self) -> None:
        """During a burst, post the next pool once the reader has caught up."""
        abd = self.abd  # abd.in_burst(), inline: this runs on every receive with bytes
        if (
            abd.bursting
            and abd.k > 1
            and not self._posted
            and not self._ready
            and not self._eof
            and self._recv_error is None
            and not self._closing
            and self._may_post_ahead()
        ):
            # best effort: bytes already taken must reach the caller; the next
            # receive() posts (and reports a failure) if it needs to.  Also
            # when memory is short: io_uring's chain is then posted whole or
            # not at all (UringEngine.post_recv_chain).
            with contextlib.suppress(OSError, MemoryError):
                self._post_pool()

    def _collect(self) -> None:
        """Move completed receives, in order, into the read-ahead queue."""
        posted = self._posted
        while posted and posted[0].done:
            # A receive leaves the list once its bytes are copied out and
            # queued: a copy or an append that fails for want of memory leaves
            # it first in line for the next call, and no byte is skipped.
            outcome = self._receive_outcome(posted[0])
            if type(outcome) is bytes and outcome:
                self._ready.append(outcome)
                del posted[0]
                self.abd.observe(len(outcome) == self.buffersize)
                continue
            del posted[0]
            if type(outcome) is bytes:
                self._eof = True
            elif isinstance(outcome, OSError) and self._recv_error is None:
                # (None: cancelled; its bytes, if any, are of no use now, and
                # an error that made the engine cancel it is recorded already)
                self._recv_error = outcome

    def _take(self, max_bytes: int) -> bytes:
        ready = self._ready
        if ready:
            data = ready[0]
            if len(ready) == 1 and len(data) <= max_bytes:
                del ready[0]  # (the usual case, take_ready's, spelled out)
            else:  # the whole chunks that fit, joined; or a long chunk's head
                data = take_ready(ready, max_bytes, self.buffersize)
            if not ready:
                self._post_ahead()
            return data
        if self._recv_error is not None:
            # (raised again at each call: without the traceback of the last time)
            raise self._recv_error.with_traceback(None)
        self._check_send_error()
        if self._eof:
            return b""
        # every posted receive was cancelled (close): nothing came
        raise self._receive_cancelled()

    def has_read_ahead(self) -> bool:
        return bool(self._ready or self._posted)

    # -- settings -------------------------------------------------------------

    def usage(self, name: str) -> Usage:
        if name == "sendcap":
            return Usage(self.sendcap, self._pending_sends())
        if name == "recvburst":
            # receives in use: posted, or completed with bytes not yet taken
            # (with the pieces of a read of several buffers, which may pass the cap)
            return Usage(self.recvburst, len(self._posted) + len(self._ready))
        if name == "buffersize":
            return Usage(self.buffersize, sum(map(len, self._ready)))
        raise ValueError(f"unknown stream setting {name!r}")
