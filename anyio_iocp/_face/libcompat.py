"""Adapters for libraries that refuse an async library they do not know.

Inside a run of the ``"iocp"`` backend, ``sniffio.current_async_library()``
answers ``"iocp"``, and it must keep doing so: AnyIO itself reads it to find the
backend.  A library that uses AnyIO's API works unchanged.  A library that
branches on the name and accepts only ``"asyncio"`` or ``"trio"`` refuses the
run, although the code it would run for asyncio (or trio) works there.

An adapter wraps the one function of that library which makes the choice, so
that on iocp it picks the code that works there.  The wrappers are put in place
by default (:mod:`anyio_iocp._face.adapters`: when a run starts, and on import
through :mod:`anyio_iocp._face.adapter_hook`), and they act only inside an iocp run
whose ``adapters`` setting is on, or for a library enabled explicitly with
``enable_for(name)``.  Everywhere else the wrapper calls the original function,
so asyncio and trio behave as before.  Nothing else changes: sniffio still
answers ``"iocp"`` to every caller, including the library's other code.
``disable_for(name)`` puts the originals back.

See ``docs/compat.md`` for what each adapter replaces and why.
"""

from __future__ import annotations

import importlib
import sys
import threading
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import sniffio

from anyio_iocp._face.runstate import run_adapters

BACKEND_NAME = "iocp"

#: (original function, "adapt now?") -> the wrapper put in its place
Wrap = Callable[[Callable[..., Any], Callable[[], bool]], Callable[..., Any]]


def _in_iocp_run() -> bool:
    try:
        return sniffio.current_async_library() == BACKEND_NAME
    except sniffio.AsyncLibraryNotFoundError:
        return False


def _adapting(library: str) -> bool:
    """Whether ``library``'s wrappers pick the adapted code here and now."""
    return _in_iocp_run() and (library in _explicit or run_adapters())


def _httpcore_current_async_library(
    original: Callable[[], str], active: Callable[[], bool]
) -> Callable[[], str]:
    # httpcore's name for its AnyIO code is "asyncio": its synchronisation
    # primitives then use anyio.Lock, anyio.Event, anyio.Semaphore and
    # anyio.CancelScope, and AutoBackend picks httpcore's AnyIOBackend, whose
    # connections come from anyio.connect_tcp, that is from the iocp engine.
    # "trio" would be wrong: httpcore's TrioBackend opens trio sockets itself,
    # past the engine.
    def current_async_library() -> str:
        if active():
            return "asyncio"
        return original()

    return current_async_library


def _httpx_create_event(
    original: Callable[[], Any], active: Callable[[], bool]
) -> Callable[[], Any]:
    # httpx's ASGITransport creates a trio.Event under trio and an
    # asyncio.Event otherwise; an asyncio.Event cannot be awaited outside
    # asyncio.  anyio.Event has the same set/is_set/wait and works everywhere.
    def create_event() -> Any:
        if active():
            import anyio

            return anyio.Event()
        return original()

    return create_event


def _asgi_lifespan_backend(
    original: Callable[[], Any], active: Callable[[], bool]
) -> Callable[[], Any]:
    # asgi-lifespan picks its asyncio or its trio backend by sniffio's name and
    # raises NotImplementedError for any other.  Its trio backend uses only
    # trio's events, memory channels, nurseries and move_on_after, which work
    # in an iocp run (a Trio run); it opens no sockets.
    def detect_concurrency_backend() -> Any:
        if active():
            from asgi_lifespan._concurrency.trio import TrioBackend

            return TrioBackend()
        return original()

    return detect_concurrency_backend


def _asyncer_get_asynclib(
    original: Callable[..., Any], active: Callable[[], bool]
) -> Callable[..., Any]:
    # asyncer imports anyio._backends._<sniffio's name> and takes its TaskGroup
    # class; the iocp backend module has none.  AnyIO's Trio backend module
    # has the TaskGroup that an iocp run uses anyway.
    def get_asynclib(asynclib_name: str | None = None) -> Any:
        if asynclib_name is None and active():
            return original("trio")
        return original(asynclib_name)

    return get_asynclib


@dataclass(frozen=True)
class _Patch:
    module: str
    attribute: str
    wrap: Wrap


#: library name -> the functions its adapter replaces.  Where a library imports
#: the function by name into another of its modules, both names are replaced.
_ADAPTERS: dict[str, tuple[_Patch, ...]] = {
    "httpcore": tuple(
        _Patch(module, "current_async_library", _httpcore_current_async_library)
        for module in ("httpcore._synchronization", "httpcore._backends.auto")
    ),
    "httpx": (_Patch("httpx._transports.asgi", "create_event", _httpx_create_event),),
    # httpx2 and httpcore2, the forks that mcp depends on: the same functions
    "httpcore2": tuple(
        _Patch(module, "current_async_library", _httpcore_current_async_library)
        for module in ("httpcore2._synchronization", "httpcore2._backends.auto")
    ),
    "httpx2": (_Patch("httpx2._transports.asgi", "create_event", _httpx_create_event),),
    "asgi_lifespan": tuple(
        _Patch(module, "detect_concurrency_backend", _asgi_lifespan_backend)
        for module in ("asgi_lifespan._concurrency", "asgi_lifespan._manager")
    ),
    "asyncer": (_Patch("asyncer._main", "get_asynclib", _asyncer_get_asynclib),),
}
#: enabling a library also enables the libraries it does its I/O through
_IMPLIES: dict[str, tuple[str, ...]] = {"httpx": ("httpcore",), "httpx2": ("httpcore2",)}
#: every module an adapter patches
PATCHED_MODULES = frozenset(patch.module for patches in _ADAPTERS.values() for patch in patches)

#: (module name, attribute) -> (module, original function) for every wrapper in place
_in_place: dict[tuple[str, str], tuple[ModuleType, Callable[..., Any]]] = {}
#: every wrapper alive -> the function it wraps
_originals: weakref.WeakKeyDictionary[Callable[..., Any], Callable[..., Any]] = (
    weakref.WeakKeyDictionary()
)
#: libraries enabled with enable_for: adapted in every iocp run
_explicit: set[str] = set()
#: (module name, attribute) already reported missing: each is reported once
_reported_missing: set[tuple[str, str]] = set()
#: guards the tables above; never held while a module is imported (an import
#: in another thread holds Python's lock of that module and may wait for this
#: one in the import hook: holding both in the other order would deadlock)
_lock = threading.RLock()

SUPPORTED_LIBRARIES = tuple(sorted(_ADAPTERS))


def _check_name(library: str) -> None:
    if library not in _ADAPTERS:
        raise ValueError(
            f"no iocp adapter for {library!r}: adapters exist for "
            + ", ".join(map(repr, SUPPORTED_LIBRARIES))
        )


def _is_wrapper(function: object) -> bool:
    try:
        return function in _originals
    except TypeError:  # not weak-referenceable: not one of ours
        return False


def _placed(patch: _Patch, module: ModuleType) -> bool:
    """Whether the patch is in place and recorded (a reloaded module has its
    own functions again)."""
    return (patch.module, patch.attribute) in _in_place and _is_wrapper(
        getattr(module, patch.attribute, None)
    )


def _put_in_place(library: str, patch: _Patch, module: ModuleType) -> None:
    current = getattr(module, patch.attribute)
    # a module that imported the function by name from a module patched
    # before it holds that wrapper already: keep it, remember the original
    original = _originals[current] if _is_wrapper(current) else current
    if current is original:
        wrapper = patch.wrap(original, lambda: _adapting(library))
        _originals[wrapper] = original
        setattr(module, patch.attribute, wrapper)
    _in_place[patch.module, patch.attribute] = (module, original)


def patch_module(name: str) -> None:
    """Put the wrappers of every adapter that patches module ``name`` in place,
    if it is imported.  A function the installed version lacks is skipped
    with a warning (the library then runs, or refuses iocp, as it is)."""
    module = sys.modules.get(name)
    if module is None:
        return
    with _lock:
        for library, patches in _ADAPTERS.items():
            for patch in patches:
                if patch.module != name or _placed(patch, module):
                    continue
                if not callable(getattr(module, patch.attribute, None)):
                    if (name, patch.attribute) not in _reported_missing:
                        _reported_missing.add((name, patch.attribute))
                        warnings.warn(
                            f"anyio_iocp: cannot adapt {library!r}: {name}.{patch.attribute} "
                            "is missing in the installed version; see docs/compat.md",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                    continue
                _put_in_place(library, patch, module)


def _import_targets(library: str) -> list[ModuleType]:
    """Import every module the adapter patches (outside ``_lock``)."""
    return [importlib.import_module(patch.module) for patch in _ADAPTERS[library]]


def _enable_one(library: str, modules: list[ModuleType]) -> None:
    for patch, module in zip(_ADAPTERS[library], modules, strict=True):
        if not callable(getattr(module, patch.attribute, None)):
            raise RuntimeError(
                f"cannot adapt {library!r}: {patch.module}.{patch.attribute} is missing in the "
                "installed version; see docs/compat.md"
            )
    # every target was found: replace them all (never half an adapter)
    for patch, module in zip(_ADAPTERS[library], modules, strict=True):
        if not _placed(patch, module):
            _put_in_place(library, patch, module)
    _explicit.add(library)


def enable_for(library: str) -> None:
    """Adapt ``library`` in every run of the ``"iocp"`` backend, whatever the
    run's ``adapters`` setting.

    Supported: ``"httpcore"`` (and through it ``httpx.AsyncClient``),
    ``"httpx"`` (``"httpcore"`` plus httpx's ``ASGITransport``), the same two
    for the forks ``"httpcore2"`` and ``"httpx2"``, ``"asgi_lifespan"`` and
    ``"asyncer"``.  Idempotent; call it once at
    start-up, before or after the library is imported.  Raises ``ValueError``
    for another name, ``ImportError`` if the library is not installed, and
    ``RuntimeError`` if the installed version lacks the function the adapter
    wraps (nothing is changed then).
    """
    _check_name(library)
    libraries = (*_IMPLIES.get(library, ()), library)
    # ImportError if not installed; imported before the lock is taken
    targets = {name: _import_targets(name) for name in libraries}
    with _lock:
        for name in libraries:
            _enable_one(name, targets[name])


def disable_for(library: str) -> None:
    """Put the library's own functions back, whether ``enable_for`` or a run
    put the wrappers in place.

    Libraries that ``enable_for`` enabled along with it (httpcore for httpx)
    stay enabled.  A later iocp run with adapters on puts the wrappers back:
    turn the adapters off (``docs/compat.md``) to keep a library unadapted.
    """
    _check_name(library)
    with _lock:
        _explicit.discard(library)
        for patch in _ADAPTERS[library]:
            module, original = _in_place.pop((patch.module, patch.attribute), (None, None))
            if module is not None:
                setattr(module, patch.attribute, original)


def enabled_libraries() -> tuple[str, ...]:
    """The libraries adapted here and now: those enabled with ``enable_for``,
    and inside an iocp run whose adapters are on, every library whose wrappers
    are in place."""
    with _lock:
        adapted = set(_explicit)
        if _in_iocp_run() and run_adapters():
            adapted.update(
                library
                for library, patches in _ADAPTERS.items()
                if all((patch.module, patch.attribute) in _in_place for patch in patches)
            )
        return tuple(sorted(adapted))
