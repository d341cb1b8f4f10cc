"""A warning, once per process, when a run on Linux falls back to the
readiness engine because the io_uring shim is not built.

That fallback has a cause the installation can fix, and nothing else would
show it: the program runs, only without io_uring.  Other fallbacks (io_uring
refused by the kernel or by a container) are the machine's, not the
installation's, and do not warn; ``engine_info().reason`` names them all.
An engine forced to ``readiness`` never warns.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings

from anyio_iocp._face.engines import SHIM_NOT_BUILT, probe_io_uring
from anyio_iocp._interface.engine import EngineInfo


class EngineFallbackWarning(RuntimeWarning):
    """A run uses the readiness engine where io_uring was expected, for a
    reason the installation can fix (the io_uring shim is not built)."""


FIX = (
    "To use io_uring, build the shim: `python setup.py build_ext --inplace` in a "
    "source checkout, or reinstall anyio-iocp with a C compiler and the kernel's "
    "headers (Debian: gcc, linux-libc-dev) and without ANYIO_IOCP_NO_URING=1. "
    "To keep the readiness engine without this warning, force it: "
    "backend_options={'engine': 'readiness'} or ANYIO_IOCP_ENGINE=readiness."
)

_lock = threading.Lock()
_warned = False


def warn_if_shim_missing(info: EngineInfo) -> None:
    """Warn (once per process) if ``info`` is an automatic fallback to the
    readiness engine on Linux caused by a missing io_uring shim."""
    global _warned
    if info.name != "readiness" or info.selected_by != "auto":
        return
    if not sys.platform.startswith("linux"):
        return
    usable, reason, _details = probe_io_uring()  # cached: the reason the run got
    if usable or not reason.startswith(SHIM_NOT_BUILT):
        return
    with _lock:
        if _warned:
            return
        _warned = True
    warnings.warn(
        f"anyio-iocp: this run uses the readiness engine, not io_uring: {reason}. {FIX}",
        EngineFallbackWarning,
        stacklevel=_caller_stacklevel(),
    )


_INTERNAL_DIRS: tuple[str, ...] = ()


def _internal_dirs() -> tuple[str, ...]:
    global _INTERNAL_DIRS
    if not _INTERNAL_DIRS:
        import anyio
        import trio

        _INTERNAL_DIRS = tuple(
            os.path.dirname(module.__file__) + os.sep
            for module in (sys.modules[__package__], anyio, trio)
            if module.__file__
        )
    return _INTERNAL_DIRS


def _caller_stacklevel() -> int:
    """The stacklevel that points the warning at the first frame outside
    anyio-iocp, AnyIO and Trio: the program's ``anyio.run`` call."""
    internal = _internal_dirs()
    frame = sys._getframe(1)  # warn_if_shim_missing
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(internal):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level
