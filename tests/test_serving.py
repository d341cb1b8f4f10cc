"""A listener's ``serve()`` (``_streams/serving.py``): AnyIO's semantics, each
connection's task started in the task group's Trio nursery without the task
handle AnyIO makes and ``serve()`` drops."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import pytest
from anyio.abc import SocketStream, TaskGroup
from anyio.streams.stapled import MultiListener
from helpers import first_listener

from anyio_iocp._streams.serving import task_name

pytestmark = pytest.mark.timeout(120)

Handler = Callable[[SocketStream], Coroutine[Any, Any, None]]


async def connect_and_read(port: int, message: bytes = b"hi") -> bytes:
    """Connect, send ``message``, and read until the server closes."""
    async with await anyio.connect_tcp("127.0.0.1", port) as client:
        await client.send(message)
        got = b""
        try:
            while True:
                got += await client.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return got


def listener_port(listener: Any) -> int:
    port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
    return port


async def assert_serve_fails_and_closes(
    handler: Callable[[SocketStream], Any],
    given: TaskGroup | None,
    error: type[Exception],
    match: str,
) -> None:
    """``serve(handler, given)``, with one client connected, raises ``error``
    (matching ``match``), and the client's connection is closed.  The error
    is kept meanwhile, as a task group keeps it while its other tasks finish:
    its traceback holds the stream, so only an explicit close ends the
    connection.  ``given`` None: the client's own task group, active."""
    answers: list[bytes] = []

    async def client(port: int) -> None:
        answers.append(await connect_and_read(port))

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as multi:
        listener = first_listener(multi)  # (not MultiListener's serve, which groups errors)
        port = listener_port(listener)
        with anyio.fail_after(10):  # a connection left open would hang the client
            async with anyio.create_task_group() as tg:
                tg.start_soon(client, port)
                with pytest.raises(error, match=match) as caught:
                    await listener.serve(handler, given or tg)
    assert answers == [b""]
    assert caught.value is not None


@pytest.mark.anyio
async def test_each_connection_runs_the_handler_in_a_task_of_its_own() -> None:
    seen: list[tuple[str | None, object]] = []

    async def handler(stream: SocketStream) -> None:
        async with stream:
            task = anyio.get_current_task()
            seen.append((task.name, task.coro.cr_code))  # type: ignore[union-attr]
            await stream.send(await stream.receive())

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener_port(listener)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler)
            answers: list[bytes] = []

            async def client(n: int) -> None:
                answers.append(await connect_and_read(port, b"%d" % n))

            async with anyio.create_task_group() as clients:
                for n in range(3):
                    clients.start_soon(client, n)
            tg.cancel_scope.cancel()
    assert sorted(answers) == [b"0", b"1", b"2"]
    expected = f"{handler.__module__}.{handler.__qualname__}"
    assert task_name(handler) == expected
    # the task runs the handler's coroutine itself: no wrapper around it
    assert seen == [(expected, handler.__code__)] * 3


def run_both(main: Callable[[], Awaitable[Any]], backend: str) -> Any:
    return anyio.run(main, backend=backend)


@pytest.mark.parametrize("backend", ["trio", "iocp"])
def test_a_handler_s_error_ends_serve_as_on_trio(backend: str) -> None:
    async def handler(stream: SocketStream) -> None:
        async with stream:
            await stream.receive()
            raise ValueError("from the handler")

    async def main() -> None:
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            port = listener_port(listener)
            async with anyio.create_task_group() as tg:
                tg.start_soon(connect_and_read, port)
                await listener.serve(handler)

    with pytest.raises(BaseExceptionGroup) as caught:
        run_both(main, backend)
    # the task group of the test, around serve's own task group, around the error
    flat = caught.value
    while isinstance(flat, BaseExceptionGroup):
        assert len(flat.exceptions) == 1
        flat = flat.exceptions[0]
    assert type(flat) is ValueError and str(flat) == "from the handler"


@pytest.mark.parametrize("backend", ["trio", "iocp"])
def test_a_cancelled_serve_cancels_its_handlers_and_ends_quietly(backend: str) -> None:
    async def main() -> list[str]:
        events: list[str] = []
        started = anyio.Event()

        async def handler(stream: SocketStream) -> None:
            async with stream:
                started.set()
                try:
                    await anyio.sleep_forever()
                except anyio.get_cancelled_exc_class():
                    events.append("handler cancelled")
                    raise

        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            port = listener_port(listener)
            async with anyio.create_task_group() as tg:
                tg.start_soon(connect_and_read, port)
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as inner:
                        inner.start_soon(listener.serve, handler)
                        await started.wait()
                        scope.cancel()
                events.append("serve ended")
        return events

    assert run_both(main, backend) == ["handler cancelled", "serve ended"]


@pytest.mark.anyio
async def test_a_task_group_of_another_kind_gets_start_soon() -> None:
    """A task group that is not AnyIO's Trio one (here a wrapper) is used
    through its public ``start_soon``."""
    started: list[str] = []

    class Wrapper:
        def __init__(self, inner: TaskGroup) -> None:
            self.inner = inner

        def start_soon(self, func: Handler, *args: Any, name: object = None) -> None:
            started.append(str(name))
            self.inner.start_soon(func, *args, name=name)

    async def handler(stream: SocketStream) -> None:
        async with stream:
            await stream.send(b"ok")

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener_port(listener)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler, Wrapper(tg))  # type: ignore[arg-type]
            assert await connect_and_read(port) == b"ok"
            tg.cancel_scope.cancel()
    assert started == [task_name(handler)]


@pytest.mark.anyio
async def test_a_connection_whose_task_cannot_start_is_closed() -> None:
    """serve() on a task group that has ended: AnyIO's error, and the
    accepted connection is closed, not left open."""

    async def handler(stream: SocketStream) -> None:
        raise AssertionError("never started")

    async with anyio.create_task_group() as ended:
        pass
    await assert_serve_fails_and_closes(handler, ended, RuntimeError, "not active")


@pytest.mark.anyio
async def test_a_multi_listener_s_listeners_serve_through_the_nursery() -> None:
    """AnyIO's MultiListener runs each listener's serve() (with the task
    group it was given, here none): the connections' tasks start in the
    nursery of the group serve() opens."""
    seen: list[object] = []

    async def handler(stream: SocketStream) -> None:
        async with stream:
            seen.append(anyio.get_current_task().coro.cr_code)  # type: ignore[union-attr]
            await stream.send(b"ok")

    multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
    assert isinstance(multi, MultiListener)
    async with multi:
        port = multi.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(multi.serve, handler)
            assert await connect_and_read(port) == b"ok"
            tg.cancel_scope.cancel()
    assert seen == [handler.__code__]


@pytest.mark.anyio
async def test_a_handler_that_is_not_async_is_a_type_error_and_its_connection_closes() -> None:
    """The handler is called in serve()'s task, as AnyIO calls it: a handler
    that returns no coroutine is a TypeError that names it, raised by serve(),
    and the connection it was given is closed."""

    def not_async(stream: SocketStream) -> None:
        return None

    await assert_serve_fails_and_closes(
        not_async, None, TypeError, r"not_async.* to return a coroutine"
    )


@pytest.mark.anyio
async def test_the_handler_is_called_in_serve_s_context() -> None:
    """As with AnyIO's serve(): what the handler's call (before its first
    await) sets in a context variable stays in serve()'s context, and the
    next connection's call sees it."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    seen: list[str] = []

    async def echo_var(stream: SocketStream) -> None:
        async with stream:
            await stream.send(b"ok")

    def handler(stream: SocketStream) -> Coroutine[Any, Any, None]:
        seen.append(var.get())
        var.set("set by a call")
        return echo_var(stream)

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as multi:
        listener = first_listener(multi)
        port = listener_port(listener)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler)
            assert await connect_and_read(port) == b"ok"
            assert await connect_and_read(port) == b"ok"
            tg.cancel_scope.cancel()
    assert seen == ["unset", "set by a call"]


@pytest.mark.anyio
async def test_without_the_checked_anyio_serve_uses_start_soon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where AnyIO is not the release the nursery reach was written for,
    every connection's task is started with the group's start_soon."""
    from anyio_iocp._internals import anyio_backend

    monkeypatch.setattr(anyio_backend, "_nursery_checked", False)
    seen: list[object] = []

    async def handler(stream: SocketStream) -> None:
        async with stream:
            seen.append(anyio.get_current_task().coro.cr_code)  # type: ignore[union-attr]
            await stream.send(b"ok")

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = listener_port(listener)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handler)
            assert await connect_and_read(port) == b"ok"
            tg.cancel_scope.cancel()
    assert seen and seen[0] is not handler.__code__  # AnyIO's wrapper runs it
