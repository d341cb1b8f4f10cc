"""A listener's ``serve()``: accept connections and start a task for each.

AnyIO's ``Listener.serve`` starts each connection's task with the task
group's ``start_soon``.  Since AnyIO 4.14 that makes a ``TaskHandle`` per
task: a cancel scope, an ``Event``, a wrapper coroutine that enters the scope
and records the outcome, and the name and coroutine checks around them.
``serve()`` drops the handle it is given, so nothing can await or cancel a
connection's task through it; on a server of short connections the handle was
the biggest single cost of a connection in the benchmark's profile
(docs/performance.md, seventeenth pass).

:func:`serve_connections` does what AnyIO's ``serve`` does, and starts each
task in the task group's Trio nursery directly, as AnyIO's Trio backend did
before 4.14: the handler is called in ``serve()``'s task, as AnyIO calls it
(its context variables and sniffio's name are ``serve()``'s, and a handler
that does not return a coroutine is a ``TypeError`` raised there), and the
new task runs the coroutine itself, in the group; its exception ends the
group as before.  A task group that is not an active one of AnyIO's Trio
backend (a wrapper, another implementation, or one whose nursery the checked
AnyIO does not give) gets ``start_soon`` instead.  The stream of a
connection whose task cannot be started is closed before the error goes on
(AnyIO's ``serve()`` leaves it to the garbage collector).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from contextlib import AsyncExitStack
from types import CoroutineType
from typing import Any

from anyio import aclose_forcefully, create_task_group
from anyio.abc import SocketListener, SocketStream, TaskGroup

from anyio_iocp._internals.anyio_backend import trio_nursery


def _the(coro: Coroutine[Any, Any, Any]) -> Coroutine[Any, Any, Any]:
    """What the nursery calls to start a task on a coroutine made already."""
    return coro


def handler_coroutine(
    handler: Callable[[SocketStream], Any], stream: SocketStream, name: str
) -> Coroutine[Any, Any, Any]:
    """``handler(stream)``, which must be a coroutine (a ``TypeError`` that
    names the handler otherwise)."""
    coro = handler(stream)
    if type(coro) is not CoroutineType and not isinstance(coro, Coroutine):
        raise TypeError(
            f"serve(): expected {name}() to return a coroutine (an async "
            f"function's call), but it returned {coro!r}"
        )
    return coro


def task_name(handler: Callable[..., Any]) -> str:
    """The name AnyIO gives a task started on ``handler``: its module and
    qualified name."""
    parts = (getattr(handler, "__module__", None), getattr(handler, "__qualname__", None))
    return ".".join(part for part in parts if part)


async def serve_connections(
    listener: SocketListener,
    handler: Callable[[SocketStream], Any],
    task_group: TaskGroup | None,
) -> None:
    """Accept connections on ``listener`` for ever, each served by a task of
    its own running ``handler(stream)`` in ``task_group`` (a new one if
    None): AnyIO's ``Listener.serve``, without the task handle it drops."""
    name = task_name(handler)
    async with AsyncExitStack() as stack:
        if task_group is None:
            task_group = await stack.enter_async_context(create_task_group())
        while True:
            stream = await listener.accept()
            coro = None
            try:
                nursery = trio_nursery(task_group)
                if nursery is None:
                    task_group.start_soon(handler, stream, name=name)
                else:
                    coro = handler_coroutine(handler, stream, name)
                    nursery.start_soon(_the, coro, name=name)
            except BaseException:
                if coro is not None:
                    coro.close()  # (never started: no "never awaited" warning)
                await aclose_forcefully(stream)
                raise
