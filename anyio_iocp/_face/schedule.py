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
"""

from __future__ import annotations

import os

from anyio_iocp._interface.budget import BUDGET_SECONDS, SCHEDULES

SCHEDULE_ENV = "ANYIO_IOCP_SCHEDULE"
BUDGET_ENV = "ANYIO_IOCP_BUDGET"
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
    if option is not None:
        value, source = option, "backend option 'budget'"
    else:
        env = os.environ.get(BUDGET_ENV)
        if env is None or not env.strip():
            return BUDGET_SECONDS
        source = f"{BUDGET_ENV}={env!r}"
        try:
            value = float(env)
        except ValueError:
            value = env
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not 0 < value <= MAX_BUDGET_SECONDS  # (NaN fails it; an int of any size is fine)
    ):
        raise ValueError(
            f"{source} must be a number of seconds above 0 and at most "
            f"{MAX_BUDGET_SECONDS:g}, not {value!r}"
        )
    return float(value)
