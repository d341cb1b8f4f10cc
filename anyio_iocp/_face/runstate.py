"""Per-run state: the engine of one ``anyio.run`` and the Trio instrument that
ties it to the scheduler.

The instrument does three things, each once per scheduler pass:

* before Trio's I/O wait: the engine submits what tasks queued during the pass;
* after the I/O wait: the engine reaps completions and wakes their tasks;
* it keeps ``sniffio`` answering ``"iocp"``.

Once the engine exists, these three move into Trio's epoll I/O manager where
that can be done safely (:mod:`anyio_iocp._internals.pass_hooks`, which says why), and
the instrument keeps only the end of the run.  Trio sets ``sniffio.thread_local.name``
  to ``"trio"`` when a run starts (and at every tick in guest mode, restoring
  the host's value after the tick); replacing ``"trio"`` with ``"iocp"`` in
  ``before_run`` and ``after_io_wait`` covers every task step, including
  ``trio.from_thread`` calls, which run in the loop's thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import sniffio
import trio

from anyio_iocp._face.engines import create_engine, select_engine
from anyio_iocp._face.fallback import warn_if_shim_missing
from anyio_iocp._face.schedule import SPIN_SECONDS
from anyio_iocp._face.tuning import Overrides
from anyio_iocp._interface import trace as _trace
from anyio_iocp._interface.budget import BUDGET_SECONDS, ScheduleBudget
from anyio_iocp._interface.engine import Engine, EngineInfo
from anyio_iocp._interface.leftovers import Leftovers
from anyio_iocp._interface.stats import EngineCounters, RunStatistics, add_finished, run_statistics
from anyio_iocp._internals.pass_hooks import install as install_pass_hooks
from anyio_iocp._internals.trio_instruments import dict_instruments

BACKEND_NAME = "iocp"

_log = logging.getLogger("anyio_iocp")

#: puts the run's instrument registry in a dict, where Trio's run loop asks
#: it twice per task step (None where Trio is not the release it was written for)
_install_dict_instruments = dict_instruments()


class RunState(trio.abc.Instrument):
    """One per run; passed to Trio as an instrument."""

    def __init__(self, info: EngineInfo, overrides: Overrides) -> None:
        self.info = info
        #: tuning settings from backend_options
        self.overrides = overrides
        self.engine: Engine | None = None
        #: streams and listeners not closed yet, closed when the run ends
        self.leftovers = Leftovers()
        #: whether the library adapters act in this run (anyio_iocp._face.adapters)
        self.adapters = True
        #: "budget" or "strict": when stream calls that did not wait yield
        self.schedule = "budget"
        #: the budget's length in seconds (unused in strict mode)
        self.budget_seconds = BUDGET_SECONDS
        #: how long the engine looks for completions before a sleep (io_uring)
        self.spin_seconds = SPIN_SECONDS

    def get_engine(self) -> Engine:
        engine = self.engine
        if engine is None:
            if _trace.active:
                _trace_selection(self.info)
            engine = self.engine = create_engine(self.info)
            engine.leftovers = self.leftovers
            self.leftovers.token = trio.lowlevel.current_trio_token()
            engine.budget = ScheduleBudget(self.schedule, self.budget_seconds)
            engine.spin_seconds = self.spin_seconds
            if _install_dict_instruments is not None:
                _install_dict_instruments()
            uninstall = install_pass_hooks(
                engine.before_io_wait, engine.after_io_wait, BACKEND_NAME
            )
            if uninstall is not None:
                # the I/O manager calls the engine now: only the end of the
                # run is left for the instrument
                trio.lowlevel.remove_instrument(self)
                trio.lowlevel.add_instrument(_RunEnd(self, uninstall))
            else:
                # Trio's instrument calls the engine (guest mode, or the
                # hooks refused): it cannot shorten the wait by the time a
                # look before a sleep spent, and in guest mode the look would
                # hold up the host's loop, so there is none
                engine.spin_seconds = 0.0
        return engine

    def before_run(self) -> None:
        _current_state.set(self)
        _claim_sniffio()

    def before_io_wait(self, timeout: float) -> None:
        engine = self.engine
        if engine is not None:
            try:
                engine.before_io_wait(timeout)
            except Exception:  # an exception here would disable the instrument
                _log.exception("engine submission failed")

    def after_io_wait(self, timeout: float) -> None:
        _claim_sniffio()
        engine = self.engine
        if engine is not None:
            try:
                engine.after_io_wait()
            except Exception:
                _log.exception("engine completion processing failed")

    def statistics(self) -> RunStatistics:
        """A snapshot of the run's counters (zero before the engine has started:
        asking does not start it)."""
        engine = self.engine
        if engine is None:
            return run_statistics(self.info.name, EngineCounters(), {}, {}, 0, (0, 0), 0)
        return run_statistics(
            engine.info.name,
            engine.counters,
            engine.posted_by_kind(),
            engine.in_flight(),
            engine.passes(),
            self.leftovers.bytes_moved(),
            engine.completions(),
        )

    def after_run(self) -> None:
        # the statistics as the program left the run: what was still in
        # flight is counted as such, not as completed by the cancellations below
        stats = self._final_statistics()
        engine, self.engine = self.engine, None
        try:
            if engine is not None:
                engine.close()  # every operation ended, the ring closed
        finally:
            try:
                self._report_end(stats)
            finally:
                self.leftovers.close_all()

    def _final_statistics(self) -> RunStatistics | None:
        try:
            return self.statistics()
        except Exception:  # statistics must never break the end of a run
            _log.exception("could not take the run's statistics")
            return None

    def _report_end(self, stats: RunStatistics | None) -> None:
        """Keep the run's statistics for finished_runs(), and trace its end."""
        try:
            if stats is not None:
                add_finished(stats)
            if not _trace.active:
                return
            left = self.leftovers.kinds()
            if any(left.values()):
                _trace.emit(
                    "run.leftovers",
                    f"{left['streams']} streams and {left['listeners']} listeners were "
                    "never closed: closed at the end of the run",
                    **left,
                )
            if stats is not None:
                _trace.emit("run.end", stats.summary(), **stats.as_dict())
        except Exception:  # a failing log handler must not leave sockets open
            _log.exception("could not report the end of the run")


class _RunEnd(trio.abc.Instrument):
    """The run state's instrument once the I/O manager calls the engine."""

    def __init__(self, state: RunState, uninstall: Callable[[], None]) -> None:
        self.state = state
        self.uninstall = uninstall

    def after_run(self) -> None:
        self.uninstall()
        self.state.after_run()


_sniffio_local = sniffio.thread_local


def _claim_sniffio() -> None:
    # Only where Trio itself has just set its name: in guest mode Trio runs its
    # first steps outside a tick, where the name must stay as the host left it.
    if _sniffio_local.name == "trio":
        _sniffio_local.name = BACKEND_NAME


_current_state: trio.lowlevel.RunVar[RunState] = trio.lowlevel.RunVar("anyio_iocp_state")


def _trace_selection(info: EngineInfo) -> None:
    _trace.emit(
        "engine.selected",
        str(info),
        engine=info.name,
        selected_by=info.selected_by,
        reason=info.reason,
        details=dict(info.details),
    )
    if info.name == "readiness" and info.reason != "requested":
        _trace.emit(
            "engine.fallback",
            f"readiness engine instead of a completion engine: {info.reason}",
            engine=info.name,
            reason=info.reason,
        )


def new_run_state(engine_option: object | None, overrides: Overrides) -> RunState:
    info = select_engine(engine_option)
    warn_if_shim_missing(info)
    return RunState(info, overrides)


def current_state() -> RunState:
    try:
        return _current_state.get()
    except (LookupError, RuntimeError):
        raise RuntimeError(
            'this call needs a run of AnyIO\'s "iocp" backend: anyio.run(main, backend="iocp")'
        ) from None


def run_adapters() -> bool:
    """Whether the library adapters act in the current run (False outside a run)."""
    try:
        return _current_state.get().adapters
    except (LookupError, RuntimeError):
        return False


def current_engine() -> Engine:
    return current_state().get_engine()


def statistics() -> RunStatistics:
    """The statistics of the current ``"iocp"`` run, as a snapshot.

    Raises :class:`RuntimeError` outside such a run.
    """
    return current_state().statistics()
