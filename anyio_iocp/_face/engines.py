"""Which engine runs, and the one module that builds it.

The engine is detected, never assumed: on Windows the IOCP engine is chosen
unless its Winsock extensions cannot be loaded; on Linux io_uring, unless the
probe of :mod:`anyio_iocp._engines.io_uring.probe` finds it missing or refused
(each reason named); the readiness engine everywhere else.  A forced engine
(``backend_options={"engine": ...}`` or ``$ANYIO_IOCP_ENGINE``) that cannot
run is an error, not a fallback.

This is the only module that imports the engine folders (``tests/test_layers.py``).
"""

from __future__ import annotations

import os
import sys

from anyio_iocp._engines.io_uring.probe import SHIM_NOT_BUILT, probe_io_uring
from anyio_iocp._engines.iocp.probe import probe_iocp
from anyio_iocp._interface.engine import Engine, EngineInfo

__all__ = [
    "ENGINE_ENV",
    "ENGINE_NAMES",
    "SHIM_NOT_BUILT",
    "create_engine",
    "probe_io_uring",
    "probe_iocp",
    "select_engine",
]

ENGINE_NAMES = ("auto", "io_uring", "iocp", "readiness")
ENGINE_ENV = "ANYIO_IOCP_ENGINE"


def validate_engine_name(name: object) -> str:
    if not isinstance(name, str) or name not in ENGINE_NAMES:
        raise ValueError(
            f"unknown engine {name!r}: expected one of {', '.join(map(repr, ENGINE_NAMES))}"
        )
    return name


def requested_engine(option: object | None) -> tuple[str, str]:
    """(engine name, how it was chosen) from the option or the environment."""
    if option is not None:
        return validate_engine_name(option), "backend_options"
    env = os.environ.get(ENGINE_ENV)
    if env:
        try:
            return validate_engine_name(env), f"${ENGINE_ENV}"
        except ValueError as exc:
            raise ValueError(f"{ENGINE_ENV}: {exc}") from None
    return "auto", "auto"


def select_engine(option: object | None = None) -> EngineInfo:
    """Choose the engine for a run; raise if a forced engine cannot run."""
    name, source = requested_engine(option)
    forced = name != "auto"
    selected_by = f"forced by {source}" if forced else "auto"
    if name == "iocp" or (name == "auto" and sys.platform == "win32"):
        usable, reason = probe_iocp()
        if usable:
            return EngineInfo("iocp", selected_by, reason)
        if forced:
            raise RuntimeError(f"the iocp engine was requested but cannot run: {reason}")
        return EngineInfo("readiness", selected_by, f"iocp unavailable: {reason}")
    if name in ("auto", "io_uring"):
        usable, reason, details = probe_io_uring()
        if usable:
            return EngineInfo("io_uring", selected_by, reason, details)
        if forced:
            raise RuntimeError(f"the io_uring engine was requested but cannot run: {reason}")
        return EngineInfo("readiness", selected_by, f"io_uring unavailable: {reason}")
    return EngineInfo("readiness", selected_by, "requested")


def create_engine(info: EngineInfo) -> Engine:
    """The engine of a run, as selected."""
    if info.name == "iocp":
        from anyio_iocp._engines.iocp.engine import IocpEngine

        return IocpEngine(info)
    if info.name == "io_uring":
        from anyio_iocp._engines.io_uring.engine import UringEngine

        return UringEngine(info)
    from anyio_iocp._engines.readiness.engine import ReadinessEngine

    return ReadinessEngine(info)
