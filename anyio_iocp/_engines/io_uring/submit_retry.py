"""Resubmitting entries that ``io_uring_enter`` refused, without stalling.

The kernel may refuse to take submission entries for now: EAGAIN when it is
short of memory for requests, EBUSY while completions wait on its overflow
list, or a partial submission.  The entries stay prepared in the ring, so
nothing is lost, but something has to wake the loop to submit them again:
pending completions do (the ring is readable), but when there are none, Trio
would sleep until some unrelated event.

This retry timer wakes the loop instead: after a refusal, the next attempt is
due 1 ms later, doubling up to 100 ms while refusals go on (no spinning), and
the reaper's wait gets that deadline.  Trio has already chosen how
long to sleep when ``before_io_wait`` runs, so a refusal also asks for one
immediate extra pass (``run_sync_soon``), in which the new deadline counts.
"""

from __future__ import annotations

import math

import trio

FIRST_DELAY = 0.001
MAX_DELAY = 0.1


def _nothing() -> None:
    """Scheduled only to end the current I/O wait."""


class SubmitRetry:
    def __init__(self) -> None:
        self._delay = 0.0
        self._due = -math.inf
        #: the reaper's current wait on the ring; its deadline is the retry time
        self._scope: trio.CancelScope | None = None
        #: refusals so far (for tests and diagnostics)
        self.refusals = 0

    @property
    def delay(self) -> float:
        """Seconds until the next attempt after the last refusal (0: none pending)."""
        return self._delay

    def due(self) -> bool:
        """May a submission be tried in this pass?"""
        return self._delay == 0 or trio.current_time() >= self._due

    def refused(self) -> None:
        """The kernel left entries unsubmitted: try again a little later."""
        self.refusals += 1
        self._delay = min(MAX_DELAY, self._delay * 2 if self._delay else FIRST_DELAY)
        self._due = trio.current_time() + self._delay
        if self._scope is not None:
            self._scope.deadline = self._due
        trio.lowlevel.current_trio_token().run_sync_soon(_nothing)

    def accepted(self) -> None:
        """Everything prepared has reached the kernel."""
        if self._delay:
            self._delay = 0.0
            self._due = -math.inf
            if self._scope is not None:
                self._scope.deadline = math.inf

    async def wait(self, fd: int | None) -> None:
        """The reaper's wait: until a retry is due, or for completions on the
        ring ``fd`` (``None``: the ring is watched otherwise, only the timer)."""
        with trio.CancelScope(deadline=self._due if self._delay else math.inf) as scope:
            self._scope = scope
            if fd is None:
                await trio.sleep_forever()
            else:
                await trio.lowlevel.wait_readable(fd)
        self._scope = None
