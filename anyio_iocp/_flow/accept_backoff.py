"""What a listener does when the process or the system runs out of descriptors.

``accept`` fails with EMFILE (this process's descriptor table is full), ENFILE
(the system's is), or ENOBUFS/ENOMEM (no memory for the socket).  The
connection stays in the kernel's listen queue, so retrying at once would fail
again at once: a loop that did so would spin at full CPU for as long as the
shortage lasts.  Ending ``serve()`` instead (Trio's behaviour, and this
package's before) takes a server down for a shortage that is usually brief.

So every engine treats these errors as a pause, not an error of ``accept()``
(the IOCP engine maps Winsock's WSAEMFILE and WSAENOBUFS to EMFILE and ENOBUFS):

* the listener stops accepting for a delay that starts at
  :data:`FIRST_DELAY` and doubles after every further failure up to
  :data:`MAX_DELAY`, then tries again (a pool of posted accepts,
  :mod:`anyio_iocp._flow.accept_pool`, posts a single accept while it
  probes, not the whole pool);
* failures that arrive while a pause is under way do not lengthen it: they
  are accepts posted before the shortage began (a pool of posted accepts
  fails all at once), not new attempts.  Counting them doubled the pause once
  per posted accept, so a pool of 500 paused for the full second at the first
  shortage (seen in the 20,000-connection storm of ``bench/run.py`` with the
  httpd profile);
* a task waiting in ``accept()`` keeps waiting, and gets the next connection
  once descriptors are free again;
* it is logged once per shortage, as a warning of the ``anyio_iocp`` logger
  when the first accept fails, and as an info record when accepting works
  again, with the number of failed attempts.  Not once per failure.

Every other accept error is raised by ``accept()`` as before.
"""

from __future__ import annotations

import errno
import logging
import time

from anyio_iocp._interface import trace as _trace
from anyio_iocp._interface.stats import EngineCounters

#: accept errors that mean "no descriptor or memory for a new socket right now"
EXHAUSTION = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: the first pause after a failed accept, doubled after each further failure
FIRST_DELAY = 0.01
MAX_DELAY = 1.0

_log = logging.getLogger("anyio_iocp")


class AcceptBackoff:
    """The pause state of one listener."""

    def __init__(self, name: str, counters: EngineCounters | None = None) -> None:
        self._name = name
        #: the run's counters, where pauses are counted (None: not counted)
        self._counters = counters
        self._delay = 0.0
        self._resume_at = 0.0
        #: failed accepts in the current shortage (0 when there is none)
        self.failures = 0
        #: failed accepts over the listener's life
        self.total_failures = 0

    @property
    def starving(self) -> bool:
        """In a shortage: the last accept failed for lack of descriptors."""
        return self.failures > 0

    def failed(self, code: int) -> None:
        """An accept failed with ``code``, one of :data:`EXHAUSTION`."""
        if not self.failures:
            _log.warning(
                "%s: accept failed with %s (%s); pausing accepts and retrying with "
                "back-off until descriptors are free (logged once per shortage)",
                self._name,
                errno.errorcode.get(code, str(code)),
                _describe(code),
            )
        self.failures += 1
        self.total_failures += 1
        now = time.monotonic()
        if now < self._resume_at:
            return  # posted before this pause began: the same attempt, not a new one
        self._delay = min(MAX_DELAY, self._delay * 2 if self._delay else FIRST_DELAY)
        self._resume_at = now + self._delay
        if self._counters is not None:
            self._counters.accept_backoffs += 1
        if _trace.active:
            name = errno.errorcode.get(code, str(code))
            _trace.emit(
                "accept.backoff",
                f"{self._name}: accept failed with {name}; pausing {self._delay * 1000:.0f} ms "
                f"(failure {self.failures} of this shortage)",
                listener=self._name,
                errno=name,
                delay=self._delay,
                failures=self.failures,
            )

    def succeeded(self) -> None:
        """An accept worked: the shortage, if any, is over."""
        if self.failures:
            _log.info("%s: accepting again after %d failed attempts", self._name, self.failures)
            if _trace.active:
                _trace.emit(
                    "accept.resumed",
                    f"{self._name}: accepting again after {self.failures} failed attempts",
                    listener=self._name,
                    failures=self.failures,
                )
            self.failures = 0
            self._delay = 0.0
            self._resume_at = 0.0

    def pause(self) -> float:
        """Seconds to wait before the next attempt (0 when it may go now)."""
        if not self.failures:
            return 0.0
        return max(0.0, self._resume_at - time.monotonic())


def _describe(code: int) -> str:
    if code == errno.EMFILE:
        return "this process has reached RLIMIT_NOFILE"
    if code == errno.ENFILE:
        return "the system-wide descriptor limit is reached"
    return "the kernel has no memory for a new socket"
