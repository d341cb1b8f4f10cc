"""A cancel point that makes no coroutine when nothing is cancelled.

Every stream call is a cancel point, checked first: the package calls
Trio's ``checkpoint_if_cancelled()`` before a byte moves.  That is a
coroutine: each call makes one, looks the task up through
``current_task()``, and is awaited, about 0.5 us on this project's machine
where the check itself is a few attribute reads.  A busy stream makes one
or two such calls per message.

:func:`cancel_pending` makes the same check as a plain function, and the
call sites read::

    if cancel_pending():
        await lowlevel.checkpoint_if_cancelled()

When it answers False nothing is cancelled, and it has counted the cancel
point as Trio's function does (``task._cancel_points``, which
``trio.testing.assert_checkpoints`` reads).  When it answers True, Trio's own
function runs and raises ``Cancelled`` (or a KeyboardInterrupt for the main
task, or the ``RuntimeError`` of a call outside a task).  So the Cancelled
and its traceback are Trio's, from the same place as before.

The check reads Trio's run context and three private fields of a task and
its runner: it comes from :mod:`anyio_iocp._internals.trio_traps`, only where
Trio is the release it was written for and its ``checkpoint_if_cancelled``
uses the names it used then.  Otherwise, and with ``$ANYIO_IOCP_TRAPS=public``,
:func:`cancel_pending` always answers True, so every call site takes Trio's
public function.
"""

from __future__ import annotations

from collections.abc import Callable

from anyio_iocp._internals.trio_traps import cancel_checker


def _always() -> bool:
    """Trio's internals are not the ones this was written for: the caller
    always takes Trio's public ``checkpoint_if_cancelled``."""
    return True


#: whether the caller must await ``checkpoint_if_cancelled()`` now (see above)
cancel_pending: Callable[[], bool] = cancel_checker() or _always
