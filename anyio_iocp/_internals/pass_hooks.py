"""The engine's once-per-pass work, called from Trio's epoll I/O manager.

The problem
-----------
Every pass of Trio's scheduler ends in the I/O manager's ``get_events``, and
the engine has work on both sides of it: hand the kernel what tasks queued
(``before_io_wait``), then reap completions and wake their tasks
(``after_io_wait``).  Trio's public way in is an instrument, and an instrument
hook is not cheap: ``Instruments.call`` copies the list of instruments, looks
the method up by name and guards the call, then the run state checks for an
engine and guards again.  On a connection that exchanges one small message at
a time a pass is taken for every ``receive()`` and every ``send()``, and
counted with cProfile the two hooks were 28 of the 120 Python calls an echoed
message cost, where Trio's own socket took 99 for everything.

What this module does
---------------------
:func:`install` gives the run's ``EpollIOManager`` a subclass whose
``get_events`` calls the engine's two hooks around Trio's ``epoll_wait`` and
claims sniffio's name, as the instrument did.  The run state then leaves
Trio's instrument list for these two hooks (it keeps ``after_run``).
Where Trio's order matters, nothing changes: the submission still happens
after the last task step of the pass and before the wait, and completions
still wake their tasks before Trio picks the next batch.

The traps
---------
* This reaches into Trio's private I/O manager.  :func:`install` checks that
  the manager is the class this was written against, with the attributes it
  uses, and otherwise does nothing (the instrument stays).
  ``$ANYIO_IOCP_PASS_HOOKS=instrument`` keeps the instrument (to compare, and
  to test both).
* Guest mode calls ``get_events`` from a worker thread while the host loop
  runs: the engine must not be touched there, so a guest run keeps the
  instrument.
* ``trio.run`` calls ``get_events`` directly: an exception escaping it would
  end the run without cleaning up.  The hooks log the exceptions they raise
  (``Exception``; a KeyboardInterrupt is deferred by Trio, which treats code
  outside any task as protected).
* The manager's class is changed, not replaced: Trio's functions reach it
  through ``runner.io_manager``.  The subclass adds no slots, so the instance
  layout is unchanged.  Each run gets a subclass of its own, whose
  ``get_events`` holds that run's hooks: nothing is looked up per pass (an
  earlier version looked each run's hooks up in a table by manager on every
  pass; docs/performance.md, thirteenth pass, has what the wrapper costs).
  A class is always part of a reference cycle, so the function that
  :func:`install` returns gives the manager its class back
  and takes ``get_events`` out of the run's class, which then holds nothing
  of the run's engine: a finished run's engine is freed at once, not by the
  cycle collector.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import sniffio

from anyio_iocp._internals.trio_epoll import current_epoll_manager

HOOKS_ENV = "ANYIO_IOCP_PASS_HOOKS"

_log = logging.getLogger("anyio_iocp")
_sniffio_local = sniffio.thread_local


def _manager_class_with_hooks(
    epoll_manager: Any,
    before: Callable[[float], float | None],
    after: Callable[[], None],
    name: str,
) -> type:
    """A subclass of Trio's manager whose ``get_events`` runs these hooks."""
    wait_for_events = epoll_manager.get_events

    def get_events(self: Any, timeout: float) -> Any:
        try:
            left = before(timeout)
        except Exception:
            _log.exception("engine submission failed")
            left = None
        events = wait_for_events(self, timeout if left is None else left)
        if _sniffio_local.name == "trio":
            _sniffio_local.name = name
        try:
            after()
        except Exception:
            _log.exception("engine completion processing failed")
        return events

    return type(
        "EpollIOManagerWithEngine",
        (epoll_manager,),
        {"__slots__": (), "get_events": get_events, "__module__": __name__},
    )


def install(
    before: Callable[[float], float | None], after: Callable[[], None], name: str
) -> Callable[[], None] | None:
    """Call ``before(timeout)`` and ``after()`` around each I/O wait of the
    current Trio run, from its epoll manager (waiting for what ``before``
    returns instead of ``timeout`` when it is not None: the time left after
    the engine spent some), and answer sniffio's question
    with ``name`` where Trio set ``"trio"``.  Returns the function that undoes
    this (call it when the run ends), or None (nothing changed) where it is
    not safe: then the caller keeps its instrument."""
    found = current_epoll_manager()
    if os.environ.get(HOOKS_ENV, "manager") == "instrument" or found is None:
        return None
    runner, manager, EpollIOManager = found
    if (
        getattr(runner, "is_guest", True)
        or type(manager) is not EpollIOManager  # (not hooked already)
        or not hasattr(EpollIOManager, "__slots__")  # a subclass adding none keeps the layout
    ):
        return None
    hooked = _manager_class_with_hooks(EpollIOManager, before, after, name)
    try:
        manager.__class__ = hooked
    except TypeError:  # a layout this was not written for
        delattr(hooked, "get_events")
        return None

    def uninstall() -> None:
        if type(manager) is hooked:
            manager.__class__ = EpollIOManager
        if "get_events" in vars(hooked):
            delattr(hooked, "get_events")  # (the hooks, and the engine, are freed with it)

    return uninstall
