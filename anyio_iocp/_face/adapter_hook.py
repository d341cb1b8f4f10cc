"""Adapts a library when it is imported after the adapters were put in place.

One finder on ``sys.meta_path`` answers only for the modules that an adapter
of :mod:`anyio_iocp._face.libcompat` patches.  It asks the other finders for the
module's spec and wraps its loader, so that the patch is applied right after
the module executes, before the importer gets it.  Every other import goes past
it untouched.  It is installed when ``anyio_iocp`` is imported or a run of the
``"iocp"`` backend starts, never at interpreter start.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Collection
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

_log = logging.getLogger("anyio_iocp")


class _PatchingLoader:
    """The module's own loader, then ``after_exec(module name)``."""

    def __init__(self, loader: Any, after_exec: Callable[[str], None]) -> None:
        self._loader = loader
        self._after_exec = after_exec

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        create: Callable[[ModuleSpec], ModuleType | None] | None = getattr(
            self._loader, "create_module", None
        )
        return None if create is None else create(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        try:
            self._after_exec(module.__name__)
        except Exception:
            # the library's import must not fail because of its adapter (a
            # warning made an error by -W error, for example): it then runs
            # unadapted, as without anyio_iocp
            _log.exception("anyio_iocp: could not adapt %s after its import", module.__name__)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ...
        return getattr(self._loader, name)


class AdapterFinder:
    """Answers for the patched module names only, with the spec another
    finder gives and its loader wrapped."""

    def __init__(self, names: Collection[str], after_exec: Callable[[str], None]) -> None:
        self.names = frozenset(names)
        self._after_exec = after_exec
        self._searching = threading.local()

    def find_spec(
        self,
        fullname: str,
        path: Any = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname not in self.names or getattr(self._searching, "active", False):
            return None
        self._searching.active = True
        try:
            spec = self._find_elsewhere(fullname, path, target)
        finally:
            self._searching.active = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        spec.loader = _PatchingLoader(spec.loader, self._after_exec)  # type: ignore[assignment]
        return spec

    def _find_elsewhere(
        self, fullname: str, path: Any, target: ModuleType | None
    ) -> ModuleSpec | None:
        for finder in list(sys.meta_path):
            if finder is self:
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            spec: ModuleSpec | None = find_spec(fullname, path, target)
            if spec is not None:
                return spec
        return None

    def invalidate_caches(self) -> None:
        pass


_install_lock = threading.Lock()


def install(names: Collection[str], after_exec: Callable[[str], None]) -> bool:
    """Put the finder first on ``sys.meta_path``, once; True if it was added now."""
    with _install_lock:  # runs may start in several threads at once
        if any(isinstance(finder, AdapterFinder) for finder in sys.meta_path):
            return False
        sys.meta_path.insert(0, AdapterFinder(names, after_exec))
        return True
