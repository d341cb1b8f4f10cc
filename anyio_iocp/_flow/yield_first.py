"""A receive that finds nothing: yield once and look again, or wait at once?

The problem
-----------
With schedule points on a budget (:mod:`anyio_iocp._interface.budget`) a
``send()`` that did not wait returns without yielding, and the ``receive()``
that usually follows comes at once.  Its peer has had no time to answer, so it
finds nothing and waits: the engine arms a receive, the process may go to
sleep in the I/O wait, and the completion wakes it.  When the peer runs on
another CPU, the yield that strict mode makes after every send gave it that
time: the receive after it often found the answer already there, and a trip
through the scheduler is cheaper than a wait that sleeps.  When the peer
shares the CPU, it cannot answer before the server sleeps, and the yield is
wasted.

What this module decides
------------------------
Each stream keeps a credit (``FlowStream.yield_credit``).  While it is
positive, a receive that would wait yields once first (a scheduler pass: the
engine reaps what completed meanwhile) and looks again; a look that finds
bytes raises the credit by ``HIT_CREDIT`` (up to ``MAX_CREDIT``), one that
finds nothing lowers it by one.  So the stream keeps yielding first while
more than about one look in ``HIT_CREDIT + 1`` finds bytes.  A new stream
has credit for one look (``FlowStream.start_credit``; the IOCP engine's
streams start with none, since a look that finds nothing costs a round trip
to the kernel there, to the wineserver under Wine).  A stream without credit (one whose looks found
nothing) waits at once, and looks after ``PROBE_AFTER`` waits: the peer may
have moved.

In strict mode the call before has just yielded, so a receive never yields
first.

A receive that comes right after its stream's own send, in the same pass,
may come here without the look before (:mod:`anyio_iocp._flow.look_after_send`
decides): its first look is then the one after the yield.
"""

from __future__ import annotations

from typing import Protocol

#: credit a stream starts with: one look, so a short connection (a request,
#: an answer, then the peer's close) finds the close after one scheduler pass
#: instead of posting a receive for it.  Measured with bench/syscall_mix.sh
#: (churn, 16 at once; 3 interleaved runs, CPU per exchange, medians): 174 us
#: starting at 1 against 190 us at 0 (Trio 198 us); at 0, 0.53-0.70 receives
#: per exchange went to the ring.  (An earlier run, while every connection
#: also came through a posted accept, had measured the opposite.)
START_CREDIT = 1
#: credit a look that found bytes earns, and the most a stream keeps
HIT_CREDIT = 2
MAX_CREDIT = 8
#: waits after which a stream without credit looks once more
PROBE_AFTER = 32


class _Stream(Protocol):
    yield_credit: int


def should_yield_first(stream: _Stream) -> bool:
    """Called when a receive is about to wait."""
    credit = stream.yield_credit
    if credit > 0:
        return True
    if credit > -PROBE_AFTER:
        stream.yield_credit = credit - 1
        return False
    stream.yield_credit = 0  # look once more (a hit brings the credit back)
    return True


def looked_again(stream: _Stream, found: bool) -> None:
    """What the look after the yield found."""
    credit = stream.yield_credit
    if not found:
        stream.yield_credit = credit - 1
    elif credit < MAX_CREDIT - HIT_CREDIT:  # (min(), spelled out: once per message)
        stream.yield_credit = credit + HIT_CREDIT
    else:
        stream.yield_credit = MAX_CREDIT
