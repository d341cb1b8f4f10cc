"""A receive right after its stream's own send: look at the socket first?

The problem
-----------
A request-response server's task sends its answer and calls ``receive()`` for
the next request at once: with schedule points on a budget
(:mod:`anyio_iocp._interface.budget`) nothing ran between the two calls.  A
receive with nothing held makes a direct ``recv`` first, which is the cheapest
way to get bytes that are there.  Right after the stream's own answer they
usually are not: the peer must first read the answer, and it has not run
since (it runs on another CPU, or the kernel did not hand it the CPU during
the send).  That ``recv`` fails with EAGAIN, a system call and a Python
exception for nothing, and the receive goes on to yield first or to wait
(:mod:`anyio_iocp._flow.yield_first`), whose own look finds the bytes or arms
the wait.  Measured on churn (a request, an answer, the peer's close) with
the peer on another CPU: 2.98 ``recvfrom`` per exchange, one of them such a
miss (``docs/performance.md``).

When the peer shares the CPU, the kernel often hands it the CPU during the
send (the woken reader preempts the writer), and by the time the send returns
the next request, or the close, is there: then the look finds it, and skipping
it would cost a scheduler pass.  A peer that sends requests ahead (pipelining)
is another case where the look finds bytes.

What this module decides
------------------------
The run keeps one record (:class:`LooksAfterSends`, one per engine): a
credit that a look right after a send raises by ``HIT_CREDIT`` (up to
``MAX_CREDIT``) when it finds bytes or the end of the stream, and lowers by one
when it finds nothing.  While the credit is positive, a receive that follows
its stream's send in the same scheduler pass looks first as any receive does;
at zero it skips that look and goes straight to the yield-first decision or
the wait, except every ``PROBE_EVERY``-th time, which looks, so that a change
(a peer moved to the server's CPU) raises the credit again.  The record is
the run's, not the stream's: on a server of short connections each stream
makes one such receive, and learns nothing from its own history.

"Right after" means in the same scheduler pass: a task that yields between
its send and its receive lets the peer run, and its receive looks first.  In
strict mode every send yields, so this never applies.  Skipping the look
changes no outcome: the bytes are taken by the look after the yield, or by the
armed wait, which completes at once when they are there.
"""

from __future__ import annotations

#: credit the run starts with: look, until the looks say they find nothing
START_CREDIT = 1
#: credit a look that found bytes earns, and the most the run keeps: looks go
#: on while more than about one in ``HIT_CREDIT + 1`` finds bytes
HIT_CREDIT = 2
MAX_CREDIT = 8
#: at zero credit, one receive in this many looks anyway
PROBE_EVERY = 16


class LooksAfterSends:
    """The run's record of what a look right after a send found."""

    __slots__ = ("credit", "skipped")

    def __init__(self) -> None:
        self.credit = START_CREDIT
        #: looks skipped since the last one made at zero credit
        self.skipped = 0

    def look(self) -> bool:
        """Whether a receive right after its stream's send looks first; if it
        does, :meth:`found` must be told what the look found.  (The per-message
        path, ``ReceivePool._first_look``, spells it ``looks.credit > 0 or
        looks.probe()``, and skips telling a look that found bytes at
        ``MAX_CREDIT``, where it changes nothing.)"""
        return self.credit > 0 or self.probe()

    def probe(self) -> bool:
        """At zero credit: whether this receive is the one in ``PROBE_EVERY``
        that looks anyway."""
        skipped = self.skipped + 1
        if skipped < PROBE_EVERY:
            self.skipped = skipped
            return False
        self.skipped = 0
        return True

    def found(self, found: bool) -> None:
        """What the look found: bytes or the end of the stream (True), or nothing."""
        credit = self.credit
        if found:
            credit += HIT_CREDIT
            self.credit = credit if credit < MAX_CREDIT else MAX_CREDIT
        elif credit > 0:
            self.credit = credit - 1
