"""Makes ``anyio._backends._iocp`` importable without touching AnyIO's package.

AnyIO resolves a backend name by importing ``anyio._backends._<name>``.  The
installed ``anyio_iocp.pth`` imports this module at interpreter start; it puts
one finder on ``sys.meta_path`` that answers for that single module name and
loads ``anyio_iocp._backend`` under it.  Nothing else is imported here, so the
cost at start-up is one small module.  ``import anyio_iocp`` installs the same
finder, for interpreters that skip ``.pth`` files (``python -S``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

BACKEND_MODULE = "anyio._backends._iocp"
IMPLEMENTATION = "anyio_iocp._backend"


class _BackendLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(IMPLEMENTATION)

    def exec_module(self, module: ModuleType) -> None:
        # The implementation module is already executed by create_module.
        pass


class IocpBackendFinder(importlib.abc.MetaPathFinder):
    """Answers only for ``anyio._backends._iocp``."""

    def find_spec(
        self,
        fullname: str,
        path: object = None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != BACKEND_MODULE:
            return None
        return importlib.machinery.ModuleSpec(fullname, _BackendLoader())


def install() -> None:
    if not any(isinstance(finder, IocpBackendFinder) for finder in sys.meta_path):
        sys.meta_path.append(IocpBackendFinder())


install()
