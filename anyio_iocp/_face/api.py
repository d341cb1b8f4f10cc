"""Public helpers that take the tuning settings as keywords.

Both return ordinary AnyIO objects and accept every keyword of the AnyIO
function they wrap.  Outside a run of the ``"iocp"`` backend the settings are
validated and then have no effect (other backends have no engine to tune).
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc

from anyio_iocp._face.tuning import tuning
from anyio_iocp._interface.settings import LISTENER_SETTINGS, STREAM_SETTINGS, check_settings
from anyio_iocp._streams.attributes import TuningAttribute


async def connect_tcp(
    remote_host: Any,
    remote_port: int,
    *,
    sendcap: int | None = None,
    recvburst: int | None = None,
    buffersize: int | None = None,
    profile: str | None = None,
    **kwargs: Any,
) -> Any:
    """``anyio.connect_tcp`` with this stream's settings (and a profile).

    Every keyword of ``anyio.connect_tcp`` (happy eyeballs, TLS, local address)
    is accepted too.  Returns what ``anyio.connect_tcp`` returns.
    """
    for name in ("backlog", "idletimeout"):
        if name in kwargs:
            raise TypeError(
                f"{name} is a listener setting: connect_tcp takes "
                "sendcap, recvburst, buffersize and profile"
            )
    check_port(remote_port)
    settings = _given(sendcap=sendcap, recvburst=recvburst, buffersize=buffersize)
    with tuning(profile, **settings):
        return await anyio.connect_tcp(remote_host, remote_port, **kwargs)


async def create_tcp_listener(
    *,
    backlog: int | None = None,
    sendcap: int | None = None,
    recvburst: int | None = None,
    buffersize: int | None = None,
    idletimeout: int | None = None,
    profile: str | None = None,
    listen_backlog: int = 65536,
    **kwargs: Any,
) -> Any:
    """``anyio.create_tcp_listener`` with the listener's settings.

    ``backlog`` is the accept pool (iocpsock's ``-backlog``); the kernel's
    ``listen()`` queue is ``listen_backlog`` (AnyIO's own ``backlog`` argument).
    ``sendcap``, ``recvburst`` and ``buffersize`` are the defaults of the
    streams the listener accepts.  ``idletimeout`` (milliseconds, 0: off)
    holds each accepted connection back until its first bytes arrive, and
    closes it if none arrive in time.  The other keywords go to AnyIO.
    """
    settings = _given(
        backlog=backlog,
        sendcap=sendcap,
        recvburst=recvburst,
        buffersize=buffersize,
        idletimeout=idletimeout,
    )
    with tuning(profile, **settings):
        return await anyio.create_tcp_listener(backlog=listen_backlog, **kwargs)


def configure(obj: Any, **settings: int) -> None:
    """Change settings of a live stream or listener of the ``"iocp"`` backend,
    like Tcl's ``fconfigure``; wrappers such as ``TLSStream`` are looked
    through.  All settings are validated before any is changed."""
    if not isinstance(obj, anyio.TypedAttributeProvider):
        raise TypeError(f"expected an AnyIO stream or listener, got {type(obj).__name__}")
    listeners = getattr(obj, "listeners", None)  # a MultiListener: all of them
    targets = listeners if listeners is not None else [obj]
    functions = []
    for target in targets:
        function = target.extra(TuningAttribute.configure, None)
        if function is None:
            raise TypeError(
                f"{type(target).__name__} is not a stream or listener of the iocp backend"
            )
        functions.append(function)
    is_stream = isinstance(obj, anyio.abc.ByteStream)
    allowed = STREAM_SETTINGS if is_stream else LISTENER_SETTINGS
    check_settings(settings, allowed, "a stream" if is_stream else "a listener")
    for function in functions:
        function(**settings)


def check_port(port: object) -> None:
    """A clear error for a port that is not one (AnyIO would report it from
    inside its happy-eyeballs task group, wrapped in an ExceptionGroup)."""
    if not isinstance(port, int) or isinstance(port, bool):
        raise TypeError(f"port must be an integer, not {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be from 0 to 65535, got {port}")


def _given(**settings: int | None) -> dict[str, int]:
    return {name: value for name, value in settings.items() if value is not None}
