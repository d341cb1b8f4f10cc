"""A listener as a pool of posted accepts, written once for the completion engines.

A completion engine cannot ask "is a connection waiting?": it posts accepts
ahead, and the kernel completes one per connection.  So a listener of the
io_uring and IOCP engines (iocpsock's ``-backlog``) keeps ``backlog`` accepts
posted, and the connections they bring in before the application asks wait
in a queue.  Queued connections plus posted accepts never exceed
``backlog``; ``accept()`` refills the pool as it takes from the queue, and
``configure(backlog=...)`` to a smaller pool withdraws the excess accepts.

Where the engine can also accept with a direct call (io_uring: ``accept4``
on the non-blocking listening socket; IOCP: ``accept()`` on it), a refill
first takes the connections already waiting in the kernel's queue that
way, and posts accepts only when none is waiting and none is queued or
posted: when the listener is idle.  An accept posted ahead of its
connection costs more than the direct call that finds one waiting: the ring
arms a poll, the arrival runs the accept as task work, and the completion
is reaped and handed over; while connections keep coming, the kernel's
listen queue holds them anyway.  So a busy listener accepts about as Trio
does (one ``accept4`` per connection, and one that finds nothing per batch),
and the pool is posted again once it has run down and the listener is idle:
after a burst smaller than the pool, the rest stays posted and is not
topped up.  The bound holds both ways: connections queued plus accepts
posted never exceed ``backlog``.  ``accept()`` looks with the direct call
before it waits, and a refill looks even while accepts are posted: after a
shortage those may never be woken for a connection already waiting (below).
A direct call that meets a shortage starts the pause like a failed accept.

An engine whose posted accepts shut the direct call out
(``direct_while_posted`` false: IOCP) would send the next ``backlog``
connections through the pool each time a busy listener caught up with its
connections for a moment, at a higher cost per connection than the direct
call (under Wine about 3 more requests to the wineserver per connection,
of 18 to 20: ``bench/wine_requests.py``).  There, a listener is *busy* when
it goes idle if, since it was last idle, the direct call found connections
waiting and the listener took connections at least one per ``BUSY_GAP``
(10 ms) on average: it then posts only ``busy_wakeup_accepts`` (one), the
accept that wakes it, and goes back to the direct call once that one has
brought its connection.  Otherwise (fewer than one connection per 10 ms on average, or
none waiting: connections that come one at a time are the pool's to take),
and when new, it posts the whole pool, ready for a storm.

:class:`PostedAcceptPool` holds that policy, and with it:

* the task waiting in ``accept()``: it parks, and the completion that brings
  a connection (or an error) wakes it; a cancelled ``accept()`` loses no
  connection, since the accept stays posted and its connection is queued;
* descriptor exhaustion (:mod:`anyio_iocp._flow.accept_backoff`): an accept
  that fails for want of descriptors or memory pauses accepting instead of
  failing ``accept()``.  After the pause a single fresh accept probes (not
  the whole pool): accepts posted before the shortage may never complete,
  since a connection's arrival wakes one posted accept and, if that one
  failed, nothing wakes the others.  Any accept that succeeds ends the
  shortage;
* the pool's own descriptors (IOCP: each posted ``AcceptEx`` owns the socket
  it accepts into, so a pool of 20,000 takes 20,000 descriptors): when posting
  runs out of descriptors while the pool holds at least two accepts, the
  pool itself took the process's last ones, and pausing would not give them
  back.  It gives half of its posted accepts back at once (withdrawn, their
  sockets closed) and keeps at most what remains: a *ceiling* below
  ``backlog``, reported as the cap of the backlog query, logged as a warning
  and traced as ``accept.giveback``.  The ceiling rises by one for each
  connection accepted, up to three quarters of the size that met the
  shortage (climbing back to that size would meet the same shortage again);
  ``configure(backlog=...)`` lifts it, and another shortage halves it
  again.  ENOBUFS (IOCP: ``WSAENOBUFS``) counts as such a shortage, as EMFILE
  does.  With fewer than two posted the shortage pauses as below;
* any other error is raised by the next ``accept()``, and only that
  ``accept()`` refills the pool;
* close: connections queued and not taken are closed, the posted accepts are
  cancelled and their completions awaited before the socket closes (memory
  lent to the kernel stays alive until then);
* the run's statistics (``accept_hits``: a connection was waiting,
  ``accept_waits``: ``accept()`` had to wait, ``direct_accept``: taken with
  the direct call) and the ``accept.refill`` trace event.

An engine writes only its primitives: post one accept, withdraw one, drain
the posted ones at close, forget the listener when it closes; and, when an
accept completes, hand the outcome to :meth:`~PostedAcceptPool.accepted`,
:meth:`~PostedAcceptPool.exhausted` or :meth:`~PostedAcceptPool.accept_failed`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from abc import abstractmethod
from collections import deque
from typing import ClassVar, Generic, TypeVar

import trio
from trio.lowlevel import enable_ki_protection

from anyio_iocp._flow.accept_backoff import EXHAUSTION, AcceptBackoff
from anyio_iocp._interface import trace as _trace
from anyio_iocp._interface.engine import ListenerIO
from anyio_iocp._interface.parking import Spot
from anyio_iocp._interface.settings import Tuning, Usage
from anyio_iocp._interface.stats import EngineCounters

_log = logging.getLogger("anyio_iocp")

#: a listener that took connections at least one per BUSY_GAP seconds on
#: average since it was last idle, some of them waiting for the direct call,
#: is busy (busy_wakeup_accepts)
BUSY_GAP = 0.01

#: the engine's handle of one posted accept
OpT = TypeVar("OpT")


class PostedAcceptPool(ListenerIO, Generic[OpT]):
    """``backlog`` posted accepts, a queue of accepted connections, back-off."""

    #: whether each posted accept holds a descriptor of its own (IOCP: the
    #: socket AcceptEx accepts into; a ring accept makes its descriptor only
    #: when a connection arrives)
    accepts_hold_descriptors: ClassVar[bool] = False
    #: whether the direct call may look while accepts are posted (IOCP: no;
    #: under Wine a direct accept can take the connection a pending AcceptEx
    #: was being completed with, and that AcceptEx then fails)
    direct_while_posted: ClassVar[bool] = True
    #: how many accepts a busy listener posts when it goes idle (module
    #: docstring); None: the whole pool, busy or not (io_uring: its posted
    #: accepts do not stop the direct call)
    busy_wakeup_accepts: ClassVar[int | None] = None

    def __init__(self, sock: socket.socket, tuning: Tuning, counters: EngineCounters) -> None:
        self.sock = sock
        self.tuning = tuning
        #: the family of the connections accepted
        self.family = sock.family
        self._counters = counters
        self._queue: deque[socket.socket] = deque()
        self._posted: set[OpT] = set()
        #: the one accept posted while short of descriptors
        self._probe: OpT | None = None
        self._error: OSError | None = None
        #: a task waiting in accept()
        self._waiter = Spot()
        self._closing = False
        #: whether the engine has a direct accept (_accept_now), and whether
        #: its last call found the kernel's listen queue empty
        self._direct = type(self)._accept_now is not PostedAcceptPool._accept_now
        self._listen_queue_empty = False
        #: when the listener was last idle, the connections taken since, and
        #: whether the direct call found one waiting since (busy_wakeup_accepts)
        self._idle_at = time.perf_counter()
        self._taken_since_idle = 0
        self._direct_hit_since_idle = False
        #: at most this many queued plus posted, below backlog, since posting
        #: ran out of descriptors (None: backlog is the bound)
        self._ceiling: int | None = None
        #: how far the ceiling may rise again: below the size that met the shortage
        self._ceiling_max = 0
        #: how the log and the trace name this listener
        self._name = f"listener {sock.getsockname()!r}"
        self._backoff = AcceptBackoff(self._name, counters)
        # The pool is posted at once, as iocpsock posted its AcceptEx calls.
        try:
            self._refill()
        except BaseException:
            self.let_go()
            raise

    # -- the engine's primitives ---------------------------------------------

    @abstractmethod
    def _post_accept(self) -> OpT:
        """Post one accept; raise OSError if it cannot be posted."""

    @abstractmethod
    def _withdraw(self, op: OpT) -> None:
        """Ask the kernel to cancel ``op``; its completion comes either way."""

    @abstractmethod
    async def _drain(self, ops: list[OpT]) -> None:
        """Cancel ``ops`` and wait for their completions (called shielded)."""

    @abstractmethod
    def _forget(self) -> None:
        """The listener is closing: the engine lets go of it and its socket."""

    def _give_back(self, op: OpT) -> None:
        """Withdraw ``op`` and free what it holds at once, for a process out of
        descriptors; its completion comes later.  The default withdraws."""
        self._withdraw(op)

    def _accept_now(self) -> socket.socket | None:
        """A connection waiting in the kernel's queue, taken with a direct
        call; None if none is waiting, or on any error (the posted accepts
        report errors).  The default: the engine has no direct call."""
        return None

    def _exhaustion(self, exc: OSError) -> int:
        """The errno of :data:`EXHAUSTION` that an error of posting stands
        for, or 0 if it is another error."""
        return exc.errno if exc.errno in EXHAUSTION else 0

    # -- completions (called by the engine) ----------------------------------

    def accepted(self, op: OpT, conn: socket.socket) -> None:
        """``op`` brought in the connection ``conn``."""
        self._posted.discard(op)
        # The probe ended; or an accept worked, which ends the shortage
        # whichever accept it was: a probe still posted is an ordinary accept
        # of the pool now, and the next shortage posts its own.
        self._probe = None
        if self._closing:
            conn.close()
            return
        self._queue.append(conn)
        self._listen_queue_empty = False  # others may have come behind it
        if self._ceiling is not None:
            self._raise_ceiling()
        backoff = self._backoff
        if backoff.failures:  # (checked here: a call per connection costs)
            backoff.succeeded()
        self._waiter.wake()

    def exhausted(self, op: OpT, code: int) -> None:
        """``op`` failed for want of descriptors or memory (``code``, an errno
        of :data:`EXHAUSTION`): a pause, not an error of ``accept()``."""
        self._ended(op)
        self._backoff.failed(code)
        self._waiter.wake()

    def accept_failed(self, op: OpT, error: OSError | None) -> None:
        """``op`` ended without a connection.  The next ``accept()`` raises
        ``error``; None: no error of the listener (a cancelled accept)."""
        self._ended(op)
        if error is not None and self._error is None and not self._closing:
            self._error = error
        self._waiter.wake()

    def _ended(self, op: OpT) -> None:
        self._posted.discard(op)
        if op is self._probe:
            self._probe = None

    # -- the pool ------------------------------------------------------------

    @enable_ki_protection  # (Ctrl+C waits: each accept posted and listed, or neither)
    def _refill(self) -> None:
        if self._closing or self._error is not None:
            return
        backoff = self._backoff
        posted = self._posted
        before = len(posted)
        try:
            # (the shortage is checked here, not by calls: this runs per connection)
            if backoff.failures:
                if backoff.pause() > 0:
                    return
                # Short of descriptors: one fresh accept probes instead of the
                # whole pool, even while accepts posted earlier are still
                # pending.  Those may never complete: a connection's arrival
                # wakes one posted accept, and if that one failed, the
                # connection waits in the listen queue with no wake-up left
                # for the others.  A new accept tries the queue at once.
                if self._probe is None:
                    probe = self._post_accept()
                    self._list(probe)
                    self._probe = probe
                    before += 1  # a probe, not a refill of the pool
                return
            queue = self._queue
            direct = self._direct
            cap = self.cap()
            while len(queue) + len(posted) < cap:
                if direct:
                    if posted and not self.direct_while_posted:
                        break  # the posted accepts take what comes (IOCP)
                    # (io_uring: also while accepts are posted: after a shortage, those
                    # posted before it may never be woken for a connection
                    # already waiting, and the direct call takes it)
                    conn = self._accept_now()
                    self._listen_queue_empty = conn is None
                    if conn is not None:
                        queue.append(conn)
                        self._counters.direct_accept += 1
                        self._direct_hit_since_idle = True
                        if self._ceiling is not None:
                            self._raise_ceiling()
                        continue
                    if queue or posted:
                        break  # not idle: the kernel's queue holds what comes next
                    direct = False  # idle: post the pool
                    wakeup = self.busy_wakeup_accepts
                    if wakeup is not None:
                        cap = self._cap_when_idle(cap, wakeup)
                self._list(self._post_accept())
        except OSError as exc:
            code = self._exhaustion(exc)
            if not code:
                raise
            if self.accepts_hold_descriptors and len(posted) >= 2 and not backoff.failures:
                self._give_way(code)  # the pool took the last descriptors
            else:
                self._backoff.failed(code)  # no socket for the accept: the same pause
        finally:
            if _trace.active and len(posted) > before:
                self._trace_refill(len(posted) - before, len(posted), len(self._queue))

    def _list(self, op: OpT) -> None:
        """Add the accept just posted to ``_posted``.  If that fails (no
        memory), the accept is withdrawn: the pool would not know of it
        (``close()`` would not wait for it, the cap would not count it).
        Its completion still comes, as a cancel or with a connection, and
        the connection is queued as any other."""
        try:
            self._posted.add(op)
        except BaseException:
            self._withdraw(op)
            raise

    def _raise_ceiling(self) -> None:
        """After a give-way: one accept more per connection accepted (posted
        or direct), up to three quarters of the pool that met the shortage."""
        ceiling = self._ceiling
        if ceiling is not None and ceiling < self._ceiling_max:
            self._ceiling = ceiling + 1

    def _cap_when_idle(self, cap: int, wakeup: int) -> int:
        """How many accepts the idle listener posts: ``wakeup`` when it was
        busy since it was last idle, else the pool (module docstring); and a
        new spell starts."""
        now = time.perf_counter()
        taken, self._taken_since_idle = self._taken_since_idle, 0
        busy = self._direct_hit_since_idle and now - self._idle_at < taken * BUSY_GAP
        self._idle_at, self._direct_hit_since_idle = now, False
        return min(cap, wakeup) if busy else cap

    def cap(self) -> int:
        """The bound on queued plus posted in force: backlog, or the ceiling
        set when posting ran out of descriptors."""
        backlog = self.tuning.backlog
        ceiling = self._ceiling
        return backlog if ceiling is None else min(backlog, ceiling)

    def _give_way(self, code: int) -> None:
        """Posting ran out of descriptors while the pool's own posted accepts
        hold them: give half of them back, and keep at most the rest."""
        posted = self._posted
        given = list(posted)[: len(posted) // 2]
        size = len(self._queue) + len(posted)
        kept = self._ceiling = size - len(given)
        # climbing back to the size that ran out would only meet the same
        # shortage again: a quarter of it stays free
        self._ceiling_max = max(kept, size - max(size // 4, 1))
        for op in given:
            self._give_back(op)
        name = errno.errorcode.get(code, str(code))
        listener = self._name
        _log.warning(
            "%s: short of descriptors or memory (%s) with %d accepts posted, each "
            "holding a socket; gave %d back, and the pool keeps at most %d of backlog %d "
            "(one more per connection accepted, up to %d)",
            listener,
            name,
            len(posted),
            len(given),
            kept,
            self.tuning.backlog,
            self._ceiling_max,
        )
        if _trace.active:
            _trace.emit(
                "accept.giveback",
                f"{listener}: short of descriptors or memory ({name}); gave back {len(given)} "
                f"posted accepts, the pool keeps at most {kept}",
                listener=listener,
                errno=name,
                given=len(given),
                ceiling=kept,
                backlog=self.tuning.backlog,
            )

    def _trace_refill(self, added: int, pool: int, queued: int) -> None:
        """The ``accept.refill`` event (callers check ``_trace.active``)."""
        fd = self.sock.fileno()
        backlog = self.tuning.backlog
        _trace.emit(
            "accept.refill",
            f"listener fd {fd}: posted {added} accepts, pool {pool} + {queued} queued "
            f"of backlog {backlog}",
            fd=fd,
            posted=added,
            pool=pool,
            queued=queued,
            backlog=backlog,
        )

    async def accept(self) -> socket.socket:
        # a cancel point first, whatever follows (a connection there, an
        # error, a wait): a cancelled accept() takes no connection
        await trio.lowlevel.checkpoint_if_cancelled()
        queue = self._queue
        if not queue:
            # a connection waiting in the kernel's queue is taken at once
            # (the direct accept)
            self._refill()
        if queue or self._error is not None:
            # no wait: the caller's budget decides on a schedule point (the
            # engine interface's contract)
            self._counters.accept_hits += 1
        else:
            self._counters.accept_waits += 1
        while not queue and self._error is None:
            if self._closing:
                raise OSError(errno.EBADF, "listener closed")
            # Out of descriptors: wait for a completion of an accept posted
            # earlier, but no longer than the pause, then probe (_refill).
            # The pause is read after the refill (at the call's start, or after
            # the last wake-up): posting the probe may itself
            # fail for want of a descriptor (IOCP: the accept's own socket),
            # and with nothing posted only the pause's end can wake this task.
            backoff = self._backoff
            pause = backoff.pause() if backoff.failures else 0.0
            if pause > 0:
                with trio.move_on_after(pause):
                    await self._waiter.wait()
            else:
                await self._waiter.wait()
            if not queue:
                self._refill()
        if queue:
            conn = queue.popleft()
            self._taken_since_idle += 1
            if queue and self._listen_queue_empty:
                # the kernel's queue was empty at the last look: look again
                # once the connections accepted ahead are taken (one look
                # that finds nothing per batch, not per connection)
                return conn
            try:
                self._refill()
            except (OSError, MemoryError):
                # the pool refills on the next accept(); this connection is
                # taken, and must be handed out whatever the refill met
                with contextlib.suppress(MemoryError):
                    _log.exception("could not refill the accept pool")
            return conn
        error, self._error = self._error, None
        assert error is not None
        raise error

    def queued(self) -> int:
        return len(self._queue)

    def usage(self, name: str) -> Usage:
        if name == "backlog":
            return Usage(self.cap(), self.queued())
        return super().usage(name)

    def configure(self, **settings: int) -> None:
        super().configure(**settings)
        if "backlog" in settings:
            self._ceiling = None  # set again: the pool tries the full backlog
        excess = len(self._queue) + len(self._posted) - self.cap()
        for op in list(self._posted)[: max(excess, 0)]:
            self._withdraw(op)  # a smaller pool: withdraw accepts
        self._refill()

    # -- the end -------------------------------------------------------------

    def discard_queued(self) -> None:
        """Close connections accepted but never taken; post no more accepts."""
        self._closing = True
        while self._queue:
            self._queue.popleft().close()

    def let_go(self) -> None:
        """The listener will not be handed out (its constructor failed, or
        its engine could not keep it): withdraw every accept posted so far
        and let the engine forget it.  The caller closes the socket.  The
        withdrawn accepts' completions come later (a connection one of them
        brought is closed): on io_uring a posted accept keeps the listening
        socket open, accepting, after its descriptor is closed."""
        self.discard_queued()
        for op in list(self._posted):
            self._withdraw(op)
        self._forget()

    def abandon(self) -> None:
        self.discard_queued()
        self.sock.close()

    async def close(self) -> None:
        self.discard_queued()
        self._waiter.wake()
        if self._posted:
            with trio.CancelScope(shield=True):
                await self._drain(list(self._posted))
        self._forget()
        self.sock.close()
