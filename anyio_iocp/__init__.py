"""anyio-iocp: a completion-based socket backend for AnyIO.

Run any AnyIO program on it with ``anyio.run(main, backend="iocp")``; importing
this package is not needed for that (see ``docs/design.md``).
"""

from __future__ import annotations

import _anyio_iocp_hook
from anyio_iocp._face.adapters import ADAPTERS_ENV
from anyio_iocp._face.adapters import install as _install_adapters
from anyio_iocp._face.api import configure, connect_tcp, create_tcp_listener
from anyio_iocp._face.engines import ENGINE_ENV, ENGINE_NAMES, select_engine
from anyio_iocp._face.fallback import EngineFallbackWarning
from anyio_iocp._face.libcompat import disable_for, enable_for, enabled_libraries
from anyio_iocp._face.tuning import PROFILES, tuning
from anyio_iocp._interface.engine import EngineInfo
from anyio_iocp._interface.settings import (
    DEFAULTS,
    MAX_BACKLOG,
    MAX_BUFFERSIZE,
    MAX_RECVBURST,
    MAX_SENDCAP,
    Tuning,
    Usage,
)
from anyio_iocp._interface.stats import RunStatistics, StreamStatistics, finished_runs
from anyio_iocp._interface.trace import (
    TRACE_ENV,
    TraceEvent,
    disable_trace,
    enable_trace,
    trace_enabled,
)
from anyio_iocp._streams.attributes import StatisticsAttribute, TuningAttribute

__all__ = [
    "ADAPTERS_ENV",
    "DEFAULTS",
    "ENGINE_ENV",
    "ENGINE_NAMES",
    "MAX_BACKLOG",
    "MAX_BUFFERSIZE",
    "MAX_RECVBURST",
    "MAX_SENDCAP",
    "PROFILES",
    "TRACE_ENV",
    "EngineFallbackWarning",
    "EngineInfo",
    "RunStatistics",
    "StatisticsAttribute",
    "StreamStatistics",
    "TraceEvent",
    "Tuning",
    "TuningAttribute",
    "Usage",
    "__version__",
    "configure",
    "connect_tcp",
    "create_tcp_listener",
    "disable_for",
    "disable_trace",
    "enable_for",
    "enable_trace",
    "enabled_libraries",
    "engine_info",
    "finished_runs",
    "statistics",
    "trace_enabled",
    "tuning",
]
__version__ = "0.1.0"

_anyio_iocp_hook.install()
_install_adapters()  # the library adapters' import hook (docs/compat.md)


def engine_info() -> EngineInfo:
    """Which engine moves the bytes, and why.

    Inside a run of the ``"iocp"`` backend: that run's engine.  Outside a run:
    the engine a run started now with default options would use.
    """
    from anyio_iocp._face.runstate import current_state

    try:
        return current_state().info
    except RuntimeError:
        return select_engine()


def statistics() -> RunStatistics:
    """The counters of the current ``"iocp"`` run, as a :class:`RunStatistics`
    snapshot (``RuntimeError`` outside such a run).  See ``docs/observability.md``."""
    from anyio_iocp._face.runstate import statistics as run_statistics

    return run_statistics()
