"""The ``--trace`` and ``--stats`` options of ``python -m anyio_iocp run``:
the trace to stderr through :mod:`logging`, and a summary of each run at exit."""

from __future__ import annotations

import logging
import sys

from anyio_iocp._interface.stats import finished_runs
from anyio_iocp._interface.trace import LOGGER_NAME, enable_trace

TRACE_FORMAT = "%(relativeCreated)10.3f ms %(name)s: %(message)s"


def enable_trace_to_stderr() -> None:
    """Trace events on stderr, one line each (and to the program's own
    logging handlers too, as any logger's records are)."""
    logger = logging.getLogger(LOGGER_NAME)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(TRACE_FORMAT))
    handler.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    enable_trace()


def print_statistics() -> None:
    """The summary of each iocp run that ended in this process, to stderr."""
    runs = finished_runs()
    if not runs:
        print("anyio-iocp statistics: no iocp run recorded", file=sys.stderr)
        return
    for number, run in enumerate(runs, 1):
        print(f"anyio-iocp statistics: run {number} of {len(runs)}", file=sys.stderr)
        print(run.summary(), file=sys.stderr)
