"""How Trio's loop wakes up when io_uring completions arrive.

The problem
-----------
Trio sleeps in ``epoll_wait``.  The io_uring's file descriptor is readable while
completions wait in its completion ring, so it only has to be in that epoll
set.  Trio's public way to put it there is a task blocked in
``trio.lowlevel.wait_readable(ring_fd)``.  But then every wake-up for
completions also schedules that task, although the engine has already reaped
the completions in the ``after_io_wait`` hook of the same pass: a task step
through Trio's scheduler (a few microseconds) and an ``epoll_ctl`` to re-arm,
for nothing, on every wait that ends with a completion.  A connection that is
accepted, answered and closed waits like that two or three times.

What this module does
---------------------
:class:`EpollRingWatch` puts the ring's descriptor into Trio's own epoll set
directly, with ``EPOLLONESHOT`` as Trio registers its descriptors, and without
a task behind it.  When the ring becomes readable, ``epoll_wait`` returns, Trio
finds no task waiting for that descriptor and wakes none (its bookkeeping
entry for an unknown descriptor is created and dropped again), and the
engine's ``after_io_wait`` reaps.  The registration is re-armed by
``before_io_wait`` before a wait that may block, and only if it may have fired
since it was last armed.  A one-shot registration is disarmed only by an
event that ``epoll_wait`` delivered, and such an event is always followed by
the ``after_io_wait`` of the same pass finding completions in the ring
(nothing reaps between the two).  A wait that the look before a sleep ended,
having found completions, cannot block: it is not re-armed for, so no
``epoll_ctl`` comes between those completions and their tasks.

The traps
---------
* This reaches into Trio's private I/O manager (``EpollIOManager._epoll``).
  :func:`ring_watch` checks that the manager is what this was written against
  and returns ``None`` otherwise; the engine then keeps a task waiting on the
  ring with ``wait_readable``, as before.  ``$ANYIO_IOCP_RING_WAKEUP=task``
  forces that fallback (to compare, and to test both).
* Trio closes its epoll before the run's ``after_run`` hook closes the engine:
  :meth:`EpollRingWatch.close` finds it closed and has nothing to undo (the
  kernel drops the registration with the last reference to the descriptor).
"""

from __future__ import annotations

import contextlib
import os
import select

from anyio_iocp._internals.trio_epoll import epoll_set_for

WAKEUP_ENV = "ANYIO_IOCP_RING_WAKEUP"
_ONESHOT_IN = select.EPOLLIN | select.EPOLLONESHOT


class EpollRingWatch:
    """The ring's descriptor in Trio's epoll set, armed before waits that may block."""

    def __init__(self, epoll: select.epoll, fd: int) -> None:
        self._epoll = epoll
        self._fd = fd
        self._registered = False
        self.armed = False

    def arm(self) -> None:
        """Make the next ``epoll_wait`` return when completions arrive."""
        if self._registered:
            self._epoll.modify(self._fd, _ONESHOT_IN)
        else:
            self._epoll.register(self._fd, _ONESHOT_IN)
            self._registered = True
        self.armed = True

    def may_have_fired(self) -> None:
        """Completions were found after an I/O wait: the one-shot registration
        may have delivered its event, so re-arm it before the next wait."""
        self.armed = False

    def close(self) -> None:
        if self._registered and not self._epoll.closed:
            with contextlib.suppress(OSError):
                self._epoll.unregister(self._fd)
        self._registered = self.armed = False


def ring_watch(fd: int) -> EpollRingWatch | None:
    """An :class:`EpollRingWatch` on the current Trio run's epoll set, or
    ``None`` where that set cannot be reached safely (another Trio I/O
    manager, changed internals, or ``$ANYIO_IOCP_RING_WAKEUP=task``)."""
    if os.environ.get(WAKEUP_ENV, "epoll") == "task":
        return None
    epoll = epoll_set_for(fd)
    return None if epoll is None else EpollRingWatch(epoll, fd)
