"""The run's schedule setting: ``"budget"`` (the default) or ``"strict"``.

``backend_options={"schedule": "strict"}`` or ``ANYIO_IOCP_SCHEDULE=strict``
(the option wins over the environment, as for ``engine``) makes every stream
call a schedule point, as in Trio.  The default lets a call that did not wait
return without yielding until the run's budget has run out; what that keeps
and what it changes: :mod:`anyio_iocp._interface.budget`.
"""

from __future__ import annotations

import os

from anyio_iocp._interface.budget import SCHEDULES

SCHEDULE_ENV = "ANYIO_IOCP_SCHEDULE"


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
