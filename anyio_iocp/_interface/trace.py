"""The trace: what the engines do inside, told as events, so that odd things
are not silent.

iocpsock's to-do list ended with "a trace feature for debugging purposes of
internal behavior so odd things aren't silent".  This is that feature.  Every
event has a *kind* (``"abd.pool"``, ``"accept.backoff"``, ...), listed with
its logging level in :data:`KINDS`, a one-line message and a few fields.

Where events go
---------------
* Python's :mod:`logging`, to the logger ``anyio_iocp.trace.<category>``
  (``anyio_iocp.trace.engine``, ``.abd``, ``.accept``, ``.send``, ``.ring``,
  ``.run``) at the kind's level; the event is attached to the record as
  ``record.trace_event``.  Configure handlers as for any library logger.
* Callbacks given to :func:`enable_trace`, called with each
  :class:`TraceEvent` in the thread of the run that emitted it.  A callback
  that raises is logged and stays registered.

Free when off
-------------
The trace is off until :func:`enable_trace` is called or the environment has
``ANYIO_IOCP_TRACE=1`` when this module is imported.  Every emitting site
reads the module attribute :data:`active` first and builds nothing when it is
false, so a run without the trace pays one attribute read per site, and the
sites are on the paths where the state changes (a pool grows, a pause starts),
not on every message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TRACE_ENV = "ANYIO_IOCP_TRACE"
LOGGER_NAME = "anyio_iocp.trace"

DEBUG, INFO, WARNING = logging.DEBUG, logging.INFO, logging.WARNING

#: every event kind -> (logging level, what it tells)
KINDS: dict[str, tuple[int, str]] = {
    "engine.selected": (INFO, "the engine a run uses, how it was chosen and why"),
    "engine.fallback": (
        WARNING,
        "a run uses less than it asked for or than the machine could give, and why "
        "(readiness instead of a completion engine; a ring without COOP_TASKRUN; "
        "single receives instead of multishot)",
    ),
    "engine.setup": (INFO, "the ring or completion port of a run: sizes, flags, receive mode"),
    "abd.pool": (
        DEBUG,
        "Automatic Burst Detection moved a stream's receive pool (k) up or down",
    ),
    "accept.refill": (DEBUG, "a listener posted accepts to fill its pool"),
    "accept.backoff": (
        WARNING,
        "accepting paused: the process or system is out of descriptors (EMFILE, ENFILE, ...)",
    ),
    "accept.giveback": (
        WARNING,
        "posting accepts ran out of descriptors (IOCP: each posted accept owns a socket): "
        "the pool gave half of them back and keeps at most the rest",
    ),
    "accept.resumed": (INFO, "accepting works again after a shortage"),
    "send.queued": (
        DEBUG,
        "a send returned before its bytes left (write-behind, within sendcap)",
    ),
    "send.completed": (DEBUG, "a write-behind send completed in the kernel"),
    "ring.cq_overflow": (
        WARNING,
        "the completion ring was full: the kernel parked completions on its overflow list",
    ),
    "ring.submit_retry": (
        WARNING,
        "the kernel refused submissions for now (EAGAIN, EBUSY): retried after a delay",
    ),
    "run.leftovers": (
        INFO,
        "the run ended with operations in flight or streams and listeners never closed",
    ),
    "run.end": (DEBUG, "a run ended: its statistics"),
}


@dataclass(frozen=True)
class TraceEvent:
    """One thing an engine did."""

    #: one of :data:`KINDS`
    kind: str
    #: one line for people
    message: str
    #: the event's figures, by name (file descriptors, sizes, errno names)
    fields: dict[str, Any] = field(default_factory=dict)
    #: ``time.monotonic()`` when it happened
    time: float = 0.0

    @property
    def level(self) -> int:
        return KINDS[self.kind][0]


#: read by every emitting site before it builds an event
active = False

_callbacks: list[Callable[[TraceEvent], None]] = []
_lock = threading.Lock()
_log = logging.getLogger("anyio_iocp")


def enable_trace(callback: Callable[[TraceEvent], None] | None = None) -> None:
    """Turn the trace on for the whole process.

    Events go to the ``anyio_iocp.trace`` loggers, and to ``callback`` if one
    is given (each callback once, however often it is given).
    """
    global active
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, not {type(callback).__name__}")
    with _lock:
        if callback is not None and callback not in _callbacks:
            _callbacks.append(callback)
        active = True


def disable_trace(callback: Callable[[TraceEvent], None] | None = None) -> None:
    """Remove ``callback``; without one, turn the trace off and remove every callback."""
    global active
    with _lock:
        if callback is None:
            _callbacks.clear()
            active = False
        elif callback in _callbacks:
            _callbacks.remove(callback)


def trace_enabled() -> bool:
    return active


def emit(kind: str, message: str, **fields: Any) -> None:
    """Report one event (callers check :data:`active` first)."""
    level = KINDS[kind][0]
    event = TraceEvent(kind, message, fields, time.monotonic())
    logger = logging.getLogger(f"{LOGGER_NAME}.{kind.partition('.')[0]}")  # cached by logging
    if logger.isEnabledFor(level):
        logger.log(level, "%s: %s", kind, message, extra={"trace_event": event})
    for callback in tuple(_callbacks):
        try:
            callback(event)
        except Exception:
            _log.exception("trace callback %r failed", callback)


def operations_left(engine: str, left: dict[str, int]) -> None:
    """The ``run.leftovers`` event of an engine that ends its run with
    operations in flight (callers check :data:`active` first)."""
    emit(
        "run.leftovers",
        f"{engine}: {sum(left.values())} operations in flight at the end of the run, "
        "cancelled and drained: " + ", ".join(f"{k} {v}" for k, v in sorted(left.items())),
        operations=left,
    )


def _from_environment() -> None:
    value = os.environ.get(TRACE_ENV, "")
    if value in ("", "0"):
        return
    if value != "1":
        raise ValueError(f"{TRACE_ENV}={value!r}: expected '0' (off) or '1' (on)")
    enable_trace()


_from_environment()
