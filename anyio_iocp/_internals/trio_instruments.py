"""Trio's instrument registry as a dict of its own, reached only where it is
the one this package was written against.

The problem
-----------
Trio's run loop asks its instruments, twice for every task step, whether any
watches the step: ``"before_task_step" in runner.instruments`` and the same
for ``after_task_step``.  The registry, ``trio._core._instrumentation.
Instruments``, is a ``collections.UserDict``, whose ``__contains__`` is a
function written in Python: two Python calls per task step, which on a busy
echo server is about two per message (``cProfile``: 2.1 calls of
``UserDict.__contains__`` per echo-64 message, the most called Python
function after the stream's own).

What this module does
---------------------
:func:`dict_instruments` hands back a function that, once inside a run,
puts in place of the runner's registry a :class:`DictInstruments`: a
``dict`` subclass holding the same entries (the hook names, each mapped to
its instruments), so that the loop's question is answered by the dict's own
lookup in C.  Its ``add_instrument``, ``remove_instrument`` and ``call`` are
Trio's own functions (they reach the entries through ``data``, which here is
the dict itself), so adding, removing, calling and disabling an instrument
that raises behave as in Trio, log message included.

The traps
---------
* **Where.**  The swap is made from a task (when the run's engine starts),
  never from inside an instrument call: Trio's ``call`` iterates a copy of
  the hook's instruments and, when one raises, removes it from the registry
  it was called on.
* **Private names.**  The registry's class and the runner's field are Trio's
  internals.  The swap is offered only where Trio is the release this was
  written for, the runner has the field, and Trio's three functions use the
  names they were written with (a release whose functions do something else
  is not followed); otherwise, and with ``$ANYIO_IOCP_TRAPS=public``, the
  registry stays Trio's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anyio_iocp._internals.trio_traps import has_fields, internals_tested, uses_names

#: the names Trio 0.35's registry functions use, each
_FUNCTION_NAMES = {
    "add_instrument": frozenset(
        {"AttributeError", "Instrument", "MethodType", "__func__", "data", "dir"}
        | {"getattr", "isinstance", "remove_instrument", "setdefault", "startswith", "types"}
    ),
    "remove_instrument": frozenset({"data", "items", "list", "pop"}),
    "call": frozenset(
        {"BaseException", "INSTRUMENT_LOGGER", "data", "exception", "getattr", "list"}
        | {"remove_instrument"}
    ),
}


class DictInstruments(dict[str, dict[Any, None]]):
    """Trio's instrument registry, as a dict: hook name -> its instruments
    (and ``"_all"`` -> every instrument), with Trio's own functions."""

    __slots__ = ()

    @property
    def data(self) -> DictInstruments:
        """The entries (the registry itself), where Trio's functions look."""
        return self

    # Trio's functions, set by dict_instruments() once they are checked
    add_instrument: Callable[..., None]
    remove_instrument: Callable[..., None]
    call: Callable[..., None]


def dict_instruments() -> Callable[[], bool] | None:
    """A function that puts a :class:`DictInstruments` in place of the
    current run's instrument registry and answers whether it did (not when
    the registry is not Trio's own class: already swapped, or something
    else's); None where Trio is not the release or the names are not the
    ones this was written for, or where ``$ANYIO_IOCP_TRAPS`` is ``public``."""
    if not internals_tested():
        return None
    try:
        from trio._core._instrumentation import Instruments
        from trio._core._run import GLOBAL_RUN_CONTEXT, Runner
    except ImportError:
        return None
    functions: dict[str, Any] = {}
    for name, names in _FUNCTION_NAMES.items():
        function: Any = Instruments.__dict__.get(name)
        # (no closure either: the function is copied into another class)
        if not uses_names(function, names) or function.__code__.co_freevars:
            return None
        functions[name] = function
    if not has_fields({Runner: ("instruments",)}):
        return None
    for name, function in functions.items():
        setattr(DictInstruments, name, function)
    context = GLOBAL_RUN_CONTEXT

    def install() -> bool:
        runner: Any = context.runner
        registry = runner.instruments
        if type(registry) is not Instruments:
            return False
        # (hooks left without instruments are dropped, as Trio's removal does)
        entries = registry.data
        runner.instruments = DictInstruments(
            {hook: watching for hook, watching in entries.items() if watching or hook == "_all"}
        )
        return True

    return install
