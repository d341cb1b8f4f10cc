"""Libraries imported only inside a run, by tests/test_adapters.py in a process
of its own.

It does not import anyio_iocp.  httpx, asgi-lifespan and asyncer are imported
inside an ``"iocp"`` run, after the run started, and each is used once: httpx
against the h11 server (tests/h11_server.py) in the same run, asgi-lifespan's
``LifespanManager`` on a small ASGI app, asyncer's task group.  It prints one
JSON line: which of them were imported before the run, and for each library
``"ok"`` or the exception it raised.

Usage: ``python late_import.py [off]``; ``off`` passes
``backend_options={"adapters": False}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from h11_server import Stats, echo_body, serve

LIBRARIES = ("httpx", "httpcore", "asgi_lifespan", "asyncer")

Message = MutableMapping[str, Any]


async def use_httpx() -> None:
    import httpx

    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, Stats())
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/echo/late")
        assert response.content == echo_body("late")
        tg.cancel_scope.cancel()


async def use_asgi_lifespan() -> None:
    from asgi_lifespan import LifespanManager

    seen: list[str] = []

    async def app(
        scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Any]
    ) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            seen.append(message["type"])
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return

    async with LifespanManager(app):
        assert seen == ["lifespan.startup"]
    assert seen == ["lifespan.startup", "lifespan.shutdown"]


async def use_asyncer() -> None:
    import asyncer

    async def double(x: int) -> int:
        await anyio.sleep(0)
        return 2 * x

    async with asyncer.create_task_group() as tg:
        values = [tg.soonify(double)(i) for i in range(5)]
    assert [v.value for v in values] == [0, 2, 4, 6, 8]


def describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]  # a task group's, around the one error
    return f"{type(exc).__name__}: {exc}"


async def main() -> dict[str, Any]:
    result: dict[str, Any] = {"imported_before": [m for m in LIBRARIES if m in sys.modules]}
    for name, use in (
        ("httpx", use_httpx),
        ("asgi_lifespan", use_asgi_lifespan),
        ("asyncer", use_asyncer),
    ):
        try:
            await use()
        except Exception as exc:
            result[name] = describe(exc)
        else:
            result[name] = "ok"
    return result


if __name__ == "__main__":
    options = {"adapters": False} if sys.argv[1:] == ["off"] else {}
    print(json.dumps(anyio.run(main, backend="iocp", backend_options=options)), flush=True)
