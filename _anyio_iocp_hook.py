"""Makes ``anyio._backends._iocp`` importable without touching AnyIO's package.

AnyIO resolves a backend name by importing ``anyio._backends._<name>``.  The
installed ``anyio_iocp.pth`` imports this module at interpreter start; it puts
one finder on ``sys.meta_path`` that answers for that single module name and
loads ``anyio_iocp._face.backend`` under it.  The finder and loader follow the
import protocol by duck typing: ``importlib.abc`` would pull some sixty
standard-library modules into every interpreter start.  ``import anyio_iocp``
installs the same finder, for interpreters that skip ``.pth`` files
(``python -S``).
"""

from __future__ import annotations

import sys
from importlib import import_module
from importlib.machinery import ModuleSpec
from types import ModuleType

BACKEND_MODULE = "anyio._backends._iocp"
IMPLEMENTATION = "anyio_iocp._face.backend"


class _BackendLoader:
    def create_module(self, spec: ModuleSpec) -> ModuleType:
        return import_module(IMPLEMENTATION)

    def exec_module(self, module: ModuleType) -> None:
        # The implementation module is already executed by create_module.
        pass


class IocpBackendFinder:
    """Answers only for ``anyio._backends._iocp``."""

    def find_spec(
        self,
        fullname: str,
        path: object = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname != BACKEND_MODULE:
            return None
        return ModuleSpec(fullname, _BackendLoader())  # type: ignore[arg-type]

    def invalidate_caches(self) -> None:
        pass


def install() -> None:
    if not any(isinstance(finder, IocpBackendFinder) for finder in sys.meta_path):
        sys.meta_path.append(IocpBackendFinder())


install()
