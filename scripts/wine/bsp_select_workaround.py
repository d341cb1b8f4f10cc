"""Test environment only (never shipped): make Trio and ``platform`` work under Wine 8.

Trio's Windows I/O manager checks at start-up that the ioctl
``SIO_BSP_HANDLE_SELECT`` answers the same socket as ``SIO_BASE_HANDLE``.
Wine 8 refuses ``SIO_BSP_HANDLE_SELECT`` (WSAEOPNOTSUPP), so ``trio.run`` fails
before the first task.  This module, imported from a ``.pth`` file in the Wine
site-packages, asks ``SIO_BASE_HANDLE`` instead when Trio asks that one ioctl.
It patches Trio lazily, when ``trio._core._io_windows`` is first imported.

Second, ``platform.platform()`` and friends ask WMI first, and Wine 8's WMI
reaches an unimplemented ``propsys.VariantToString`` that aborts the process.
``platform`` falls back to the registry when its WMI query raises OSError, so
the query is made to raise that.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any

TARGET = "trio._core._io_windows"


def _patch(module: Any) -> None:
    original = module._get_underlying_socket
    ioctls = module.WSAIoctls

    def get_underlying_socket(sock: Any, *, which: int = ioctls.SIO_BASE_HANDLE) -> Any:
        if which == ioctls.SIO_BSP_HANDLE_SELECT:
            which = ioctls.SIO_BASE_HANDLE
        return original(sock, which=which)

    module._get_underlying_socket = get_underlying_socket


class _Loader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        result: ModuleType | None = self._inner.create_module(spec)
        return result

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def _no_wmi(*args: Any, **kwargs: Any) -> Any:
    raise OSError("WMI is not usable under Wine 8 (propsys.VariantToString)")


def install() -> None:
    if sys.platform == "win32" and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
        import platform

        platform._wmi_query = _no_wmi  # type: ignore[attr-defined]
