"""The accept back-off's timing (``_flow/accept_backoff.py``), on a clock the test moves."""

from __future__ import annotations

import errno

import pytest
from helpers import MovedClock

from anyio_iocp._flow.accept_backoff import FIRST_DELAY, MAX_DELAY, AcceptBackoff


def test_each_new_attempt_that_fails_doubles_the_pause(moved_clock: MovedClock) -> None:
    backoff = AcceptBackoff("test")
    pauses = []
    for _ in range(10):
        backoff.failed(errno.EMFILE)
        pauses.append(backoff.pause())
        moved_clock.now += backoff.pause()  # the pause ends; the probe fails again
    assert pauses[:3] == pytest.approx([FIRST_DELAY, 2 * FIRST_DELAY, 4 * FIRST_DELAY])
    assert pauses[-1] == MAX_DELAY
    assert backoff.failures == 10


def test_failures_of_accepts_posted_before_the_pause_do_not_lengthen_it(
    moved_clock: MovedClock,
) -> None:
    """A pool of posted accepts fails all at once: one pause of FIRST_DELAY."""
    backoff = AcceptBackoff("test")
    for _ in range(500):
        backoff.failed(errno.EMFILE)
        moved_clock.now += 0.00001  # they complete within the first pause
    assert backoff.failures == 500
    assert 0 < backoff.pause() <= FIRST_DELAY
    moved_clock.now += FIRST_DELAY  # the pause ended: the probe fails
    backoff.failed(errno.EMFILE)
    assert backoff.pause() == pytest.approx(2 * FIRST_DELAY)


def test_a_success_ends_the_shortage(moved_clock: MovedClock) -> None:
    backoff = AcceptBackoff("test")
    backoff.failed(errno.ENFILE)
    assert backoff.starving
    backoff.succeeded()
    assert not backoff.starving and backoff.pause() == 0.0
    backoff.failed(errno.ENFILE)
    assert backoff.pause() == pytest.approx(FIRST_DELAY), "a new shortage starts short again"
