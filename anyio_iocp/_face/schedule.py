"""The run's schedule settings: ``"budget"`` (the default) or ``"strict"``,
and the length of the budget.

``backend_options={"schedule": "strict"}`` or ``ANYIO_IOCP_SCHEDULE=strict``
(the option wins over the environment, as for ``engine``) makes every stream
call a schedule point, as in Trio.  The default lets a call that did not wait
return without yielding until the run's budget has run out; what that keeps
and what it changes: :mod:`anyio_iocp._interface.budget`.

``backend_options={"budget": 0.002}`` or ``ANYIO_IOCP_BUDGET=0.002`` sets the
budget's length in seconds (default ``BUDGET_SECONDS``, 1 ms; at most
``MAX_BUDGET_SECONDS``).  It is a trade between latency and the cost of
yields; a profiler that slows the program down also stretches the work a
wall-clock budget allows, which ``bench/callgrind.sh`` makes up for with it.
Strict mode has no budget, so the length does not apply there (a bad value
is refused all the same).

``backend_options={"spin": 0.00015}`` or ``ANYIO_IOCP_SPIN=0.00015`` sets how
long, in seconds, the io_uring engine looks for completions before the loop
sleeps, when the loop's last sleep was that short or shorter (default
``SPIN_SECONDS``; 0 turns it off; at most ``MAX_SPIN_SECONDS``): see
:mod:`anyio_iocp._engines.io_uring.spin`.
"""

from __future__ import annotations

import os

from anyio_iocp._interface.budget import BUDGET_SECONDS, SCHEDULES

SCHEDULE_ENV = "ANYIO_IOCP_SCHEDULE"
BUDGET_ENV = "ANYIO_IOCP_BUDGET"
SPIN_ENV = "ANYIO_IOCP_SPIN"
#: the default look before a sleep (docs/performance.md, twelfth pass)
SPIN_SECONDS = 0.00015
#: the longest look accepted: a look that fails costs its whole length in CPU
MAX_SPIN_SECONDS = 0.001
#: the longest budget accepted: beyond it, tasks wait for each other for
#: longer than any timeout a network program would set on purpose
MAX_BUDGET_SECONDS = 1.0


def requested_schedule(option: object | None) -> str:
    """The run's schedule, from its ``schedule`` option or the environment."""
    accepted = ", ".join(map(repr, SCHEDULES))
    if option is not None:
        if option not in SCHEDULES:
            raise ValueError(f"backend option 'schedule' must be one of {accepted}, not {option!r}")
        return str(option)
    env = os.environ.get(SCHEDULE_ENV)
    if env is None or env == "":
        return "budget"
    if env not in SCHEDULES:
        raise ValueError(f"{SCHEDULE_ENV}={env!r}: expected one of {accepted}")
    return env


def requested_budget(option: object | None) -> float:
    """The length of the run's budget in seconds, from its ``budget`` option or
    the environment (default :data:`BUDGET_SECONDS`)."""
    return _seconds("budget", option, BUDGET_ENV, BUDGET_SECONDS, MAX_BUDGET_SECONDS, zero=False)


def requested_spin(option: object | None) -> float:
    """How long the engine looks for completions before a sleep, in seconds
    (0: never), from the ``spin`` option or the environment."""
    return _seconds("spin", option, SPIN_ENV, SPIN_SECONDS, MAX_SPIN_SECONDS, zero=True)


def _seconds(
    name: str, option: object | None, env_name: str, default: float, most: float, zero: bool
) -> float:
    """A setting in seconds from its option (first) or the environment: above
    0 (or from 0, with ``zero``) and at most ``most``; refused with a message
    that names the source and the accepted range otherwise."""
    if option is not None:
        value, source = option, f"backend option {name!r}"
    else:
        env = os.environ.get(env_name)
        if env is None or not env.strip():
            return default
        source = f"{env_name}={env!r}"
        try:
            value = float(env)
        except ValueError:
            value = env
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not ((value >= 0 if zero else value > 0) and value <= most)  # (NaN fails it)
    ):
        low = "from 0 (off) to" if zero else "above 0 and at most"
        raise ValueError(f"{source} must be a number of seconds {low} {most:g}, not {value!r}")
    return float(value)
