"""The settings types engines need: one socket's flow-control settings
(:class:`Tuning`), their valid ranges, and what a query returns (:class:`Usage`).

Where the values come from (profiles, scopes, ``backend_options``) is the
public face's business (``anyio_iocp._face.tuning``); an engine only reads a
:class:`Tuning` and validates live changes with :func:`check_settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

MAX_BACKLOG = 65535
MAX_SENDCAP = 1024
MAX_RECVBURST = 1024
#: receive buffers above this are refused (a posted receive holds one each)
MAX_BUFFERSIZE = 16 * 1024 * 1024
#: one day, in milliseconds
MAX_IDLETIMEOUT = 86_400_000

#: setting name -> (minimum, maximum)
RANGES: dict[str, tuple[int, int]] = {
    "backlog": (1, MAX_BACKLOG),
    "sendcap": (1, MAX_SENDCAP),
    "recvburst": (1, MAX_RECVBURST),
    "buffersize": (1, MAX_BUFFERSIZE),
    "idletimeout": (0, MAX_IDLETIMEOUT),
}
STREAM_SETTINGS = ("sendcap", "recvburst", "buffersize")
LISTENER_SETTINGS = ("backlog", "idletimeout", *STREAM_SETTINGS)


@dataclass(frozen=True)
class Tuning:
    """A complete set of settings."""

    backlog: int = 128
    sendcap: int = 1
    recvburst: int = 1
    buffersize: int = 65536
    #: milliseconds an accepted connection may take to send its first byte; 0: off
    idletimeout: int = 0


DEFAULTS = Tuning()


class Usage(NamedTuple):
    """What a query returns: the cap and how much of it is in use right now."""

    cap: int
    in_use: int


def validate_setting(name: str, value: object) -> int:
    if name not in RANGES:
        raise ValueError(
            f"unknown setting {name!r}: expected one of {', '.join(map(repr, RANGES))}"
        )
    low, high = RANGES[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(
            f"{name} must be an integer from {low} to {high}, not {type(value).__name__}"
        )
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}, got {value}")
    return value


def check_settings(
    settings: Mapping[str, object], allowed: tuple[str, ...], what: str
) -> dict[str, int]:
    """Validate every setting (all before any is used); names outside ``allowed``
    are refused with the reason."""
    checked: dict[str, int] = {}
    for name, value in settings.items():
        if name in RANGES and name not in allowed:
            expected = ", ".join(map(repr, allowed))
            raise ValueError(f"{name!r} is not a setting of {what}: expected one of {expected}")
        checked[name] = validate_setting(name, value)
    return checked
