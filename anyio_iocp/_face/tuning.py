"""Flow-control settings: backlog, sendcap, recvburst, buffersize, and profiles.

These are iocpsock's tunables (``-backlog``, ``-sendcap``, ``-recvburst``) made
per-listener and per-stream settings of AnyIO objects:

* ``backlog`` (listeners): how many connections the engine keeps accepting ahead
  of the application (io_uring: a pool of this many posted single-shot
  accepts feeding a queue; readiness: up to this many connections accepted per
  wake-up into the same kind of queue).
* ``sendcap`` (streams): how many sends may be in flight.  ``send()`` returns
  once its data is handed over while fewer than ``sendcap`` are in flight.
* ``recvburst`` (streams): the cap of Automatic Burst Detection, how many
  receives may be posted ahead of the reader during a burst.
* ``buffersize`` (streams): the size of each posted receive buffer.
* ``idletimeout`` (listeners): iocpsock 0.2's watchdog.  When above 0, an
  accepted connection reaches ``accept()`` only once its first bytes have
  arrived, and is closed if none arrive within this many milliseconds.  0
  (the default) turns it off.

A listener's ``sendcap``, ``recvburst`` and ``buffersize`` are the defaults of
the streams it accepts.

Where a setting's value comes from, most specific first: explicit keywords
(``anyio_iocp.connect_tcp(..., sendcap=4)``), the innermost
``anyio_iocp.tuning(...)`` scope, the run's ``backend_options``, the defaults.
Within each of these a profile gives values and explicit settings override it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from anyio_iocp._interface.settings import (
    DEFAULTS,
    LISTENER_SETTINGS,
    RANGES,
    Tuning,
    check_settings,
)

#: iocpsock's own advice: a file server wants bursts both ways; a web server
#: wants many connections, each small and short.
PROFILES: dict[str, Tuning] = {
    "default": DEFAULTS,
    "ftpd": Tuning(backlog=10, sendcap=20, recvburst=20),
    "httpd": Tuning(backlog=500, sendcap=1, recvburst=1),
}


def validate_profile(profile: object) -> Tuning:
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ValueError(
            f"unknown profile {profile!r}: expected one of {', '.join(map(repr, PROFILES))}"
        )
    return PROFILES[profile]


@dataclass(frozen=True)
class Overrides:
    """Settings given at one level (a scope, the run, a call): a profile and/or
    explicit values; ``None`` where the level says nothing."""

    profile: Tuning | None = None
    values: tuple[tuple[str, int], ...] = ()

    @classmethod
    def parse(
        cls,
        profile: object,
        settings: Mapping[str, object],
        allowed: tuple[str, ...] = LISTENER_SETTINGS,
        what: str = "a listener",
    ) -> Overrides:
        # None means "not given" for a known setting; an unknown name is refused
        given = {
            name: value
            for name, value in settings.items()
            if value is not None or name not in RANGES
        }
        checked = check_settings(given, allowed, what)
        base = validate_profile(profile) if profile is not None else None
        return cls(base, tuple(checked.items()))

    def apply(self, tuning: Tuning) -> Tuning:
        if self.profile is not None:
            tuning = self.profile
        if self.values:
            tuning = replace(tuning, **dict(self.values))
        return tuning


_scope: contextvars.ContextVar[tuple[Overrides, ...]] = contextvars.ContextVar(
    "anyio_iocp_tuning", default=()
)


@contextmanager
def tuning(profile: str | None = None, **settings: int) -> Iterator[None]:
    """Defaults for sockets created in this scope, also by code that calls plain
    ``anyio.connect_tcp``/``anyio.create_tcp_listener``.

    Scoped like a context variable: tasks started inside inherit it, and an
    inner scope overrides an outer one setting by setting.
    """
    overrides = Overrides.parse(profile, settings)
    token = _scope.set((*_scope.get(), overrides))
    try:
        yield
    finally:
        _scope.reset(token)


def effective(run_defaults: Overrides, call: Overrides | None = None) -> Tuning:
    """The settings for a new socket: defaults < run < scopes (outer to inner) < call."""
    result = run_defaults.apply(DEFAULTS)
    for overrides in _scope.get():
        result = overrides.apply(result)
    if call is not None:
        result = call.apply(result)
    return result


def run_overrides(options: dict[str, Any]) -> Overrides:
    """Pop this backend's tuning keys from ``backend_options``."""
    settings = {name: options.pop(name) for name in list(options) if name in RANGES}
    profile = options.pop("profile", None)
    return Overrides.parse(profile, settings, what="backend_options")
