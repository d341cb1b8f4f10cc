"""Opt-in adapters for libraries that refuse an async library they do not know.

Inside a run of the ``"iocp"`` backend, ``sniffio.current_async_library()``
answers ``"iocp"``, and it must keep doing so: AnyIO itself reads it to find the
backend.  A library that uses AnyIO's API works unchanged.  A library that
branches on the name and accepts only ``"asyncio"`` or ``"trio"`` refuses the
run, although the code it would run for asyncio is plain AnyIO code.

``enable_for(name)`` wraps the one function of that library which makes the
choice, so that on iocp it picks the AnyIO code.  Outside an iocp run the
wrapper calls the original function, so asyncio and trio behave as before.
Nothing else changes: sniffio still answers ``"iocp"`` to every caller,
including the library's other code.  ``disable_for(name)`` puts the originals back.

See ``docs/compat.md`` for what each adapter replaces and why.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sniffio

BACKEND_NAME = "iocp"


def _in_iocp_run() -> bool:
    try:
        return sniffio.current_async_library() == BACKEND_NAME
    except sniffio.AsyncLibraryNotFoundError:
        return False


def _httpcore_current_async_library(original: Callable[[], str]) -> Callable[[], str]:
    # httpcore's name for its AnyIO code is "asyncio": its synchronisation
    # primitives then use anyio.Lock, anyio.Event, anyio.Semaphore and
    # anyio.CancelScope, and AutoBackend picks httpcore's AnyIOBackend, whose
    # connections come from anyio.connect_tcp, that is from the iocp engine.
    # "trio" would be wrong: httpcore's TrioBackend opens trio sockets itself,
    # past the engine.
    def current_async_library() -> str:
        if _in_iocp_run():
            return "asyncio"
        return original()

    return current_async_library


def _httpx_create_event(original: Callable[[], Any]) -> Callable[[], Any]:
    # httpx's ASGITransport creates a trio.Event under trio and an
    # asyncio.Event otherwise; an asyncio.Event cannot be awaited outside
    # asyncio.  anyio.Event has the same set/is_set/wait and works everywhere.
    def create_event() -> Any:
        if _in_iocp_run():
            import anyio

            return anyio.Event()
        return original()

    return create_event


@dataclass(frozen=True)
class _Patch:
    module: str
    attribute: str
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]]


#: library name -> the functions its adapter replaces.  httpcore imports
#: current_async_library by name into its AutoBackend module, so both names
#: are replaced.
_ADAPTERS: dict[str, tuple[_Patch, ...]] = {
    "httpcore": tuple(
        _Patch(module, "current_async_library", _httpcore_current_async_library)
        for module in ("httpcore._synchronization", "httpcore._backends.auto")
    ),
    "httpx": (_Patch("httpx._transports.asgi", "create_event", _httpx_create_event),),
}
#: enabling a library also enables the libraries it does its I/O through
_IMPLIES: dict[str, tuple[str, ...]] = {"httpx": ("httpcore",)}

#: library name -> [(module, attribute, original)] for what is enabled now
_enabled: dict[str, list[tuple[Any, str, Callable[..., Any]]]] = {}
_lock = threading.Lock()

SUPPORTED_LIBRARIES = tuple(sorted(_ADAPTERS))


def _check_name(library: str) -> None:
    if library not in _ADAPTERS:
        raise ValueError(
            f"no iocp adapter for {library!r}: adapters exist for "
            + ", ".join(map(repr, SUPPORTED_LIBRARIES))
        )


def _enable_one(library: str) -> None:
    if library in _enabled:
        return
    targets = []
    for patch in _ADAPTERS[library]:
        module = importlib.import_module(patch.module)  # ImportError if not installed
        original = getattr(module, patch.attribute, None)
        if not callable(original):
            raise RuntimeError(
                f"cannot adapt {library!r}: {patch.module}.{patch.attribute} is missing in the "
                "installed version; see docs/compat.md"
            )
        targets.append((module, patch.attribute, original))
    # every target was found: replace them all (never half an adapter)
    for (module, attribute, original), patch in zip(targets, _ADAPTERS[library], strict=True):
        setattr(module, attribute, patch.wrap(original))
    _enabled[library] = targets


def enable_for(library: str) -> None:
    """Let ``library`` run on the ``"iocp"`` backend through its AnyIO code.

    Supported: ``"httpcore"`` (and through it ``httpx.AsyncClient``), and
    ``"httpx"`` (``"httpcore"`` plus httpx's ``ASGITransport``).  Idempotent;
    call it once at start-up, before or after the library is imported.
    Raises ``ValueError`` for another name, ``ImportError`` if the library is
    not installed, and ``RuntimeError`` if the installed version lacks the
    function the adapter wraps (nothing is changed then).
    """
    _check_name(library)
    with _lock:
        for name in (*_IMPLIES.get(library, ()), library):
            _enable_one(name)


def disable_for(library: str) -> None:
    """Undo ``enable_for(library)``: put the library's own functions back.

    Libraries that ``enable_for`` enabled along with it (httpcore for httpx)
    stay enabled.
    """
    _check_name(library)
    with _lock:
        for module, attribute, original in _enabled.pop(library, ()):
            setattr(module, attribute, original)


def enabled_libraries() -> tuple[str, ...]:
    """The libraries whose adapter is in place now."""
    with _lock:
        return tuple(sorted(_enabled))
