"""The benchmark server: one AnyIO application, run on any AnyIO backend.

Usage: python bench/server_app.py BACKEND MODE [BACKLOG]

BACKEND: asyncio | asyncio+uvloop | trio | iocp | iocp-single | iocp-readiness | iocp-httpd
         | iocp-strict | iocp-ring | iocp-direct | iocp-nospin
MODE:    echo  - echo back every received chunk
         hello - read until "hello\\n", reply "hello back\\n", read until the
                 client closes, then close
         sink  - read and discard until EOF
         http  - HTTP/1.1 with h11, keep-alive: every request is answered
                 200 with a 13-byte body, the response in one send()

Listens on 127.0.0.1 with an ephemeral port and prints the port on one line of
stdout.  Runs until killed.  Per-connection errors (resets etc.) are ignored.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream

if sys.platform != "win32":
    import resource

DEFAULT_BACKLOG = 4096
HELLO = b"hello\n"
HELLO_BACK = b"hello back\n"

# What a connection handler may see when the peer misbehaves or resets.
PEER_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)

Handler = Callable[[SocketStream], Awaitable[None]]

# name -> (anyio backend, backend options)
BACKENDS: dict[str, tuple[str, dict[str, Any]]] = {
    "asyncio": ("asyncio", {}),
    "asyncio+uvloop": ("asyncio", {"use_uvloop": True}),
    "trio": ("trio", {}),
    "iocp": ("iocp", {}),
    # the same backend, to compare steps: io_uring with single receives
    # (no multishot), and the readiness engine
    "iocp-single": ("iocp", {"engine": "io_uring"}),
    "iocp-readiness": ("iocp", {"engine": "readiness"}),
    # iocpsock's httpd profile: a pool of 500 posted accepts (docs/tuning.md)
    "iocp-httpd": ("iocp", {"profile": "httpd"}),
    # a schedule point on every stream call, as in Trio (docs/design.md)
    "iocp-strict": ("iocp", {"schedule": "strict"}),
    # io_uring with every send that can going quiet through the ring, and
    # with none (by default: quiet while passes serve several receives)
    "iocp-ring": ("iocp", {"engine": "io_uring"}),
    "iocp-direct": ("iocp", {"engine": "io_uring"}),
    # io_uring without its look for completions before a sleep (spin)
    "iocp-nospin": ("iocp", {"spin": 0}),
}
#: environment each backend needs ($ANYIO_IOCP_RECV and $ANYIO_IOCP_SEND are
#: read when the engine starts)
BACKEND_ENV: dict[str, dict[str, str]] = {
    "iocp-single": {"ANYIO_IOCP_RECV": "single"},
    "iocp-ring": {"ANYIO_IOCP_SEND": "ring"},
    "iocp-direct": {"ANYIO_IOCP_SEND": "direct"},
}


async def drain_until_eof(stream: SocketStream) -> None:
    try:
        while True:
            await stream.receive()
    except anyio.EndOfStream:
        pass


async def handle_echo(stream: SocketStream) -> None:
    while True:
        data = await stream.receive()
        await stream.send(data)


async def handle_hello(stream: SocketStream) -> None:
    buf = b""
    while HELLO not in buf:
        if len(buf) > 1024:
            return
        buf += await stream.receive()
    await stream.send(HELLO_BACK)
    await drain_until_eof(stream)


HTTP_BODY = b"Hello, world\n"


async def handle_http(stream: SocketStream) -> None:
    """An HTTP/1.1 server as a small AnyIO application would write it with
    h11 (imported here: the other modes do not need it)."""
    import h11

    conn = h11.Connection(h11.SERVER)
    headers = [("content-type", "text/plain"), ("content-length", str(len(HTTP_BODY)))]
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return  # e.g. a request cut short when the load generator stops
        if event is h11.NEED_DATA:
            try:
                conn.receive_data(await stream.receive())
            except anyio.EndOfStream:
                conn.receive_data(b"")
        elif isinstance(event, h11.EndOfMessage):
            response = conn.send(h11.Response(status_code=200, headers=headers))
            body = conn.send(h11.Data(data=HTTP_BODY))
            end = conn.send(h11.EndOfMessage())
            await stream.send(b"".join(part or b"" for part in (response, body, end)))
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
        elif isinstance(event, h11.ConnectionClosed):
            return
        # h11.Request and h11.Data: nothing to do until the request ends


HANDLERS: dict[str, Handler] = {
    "echo": handle_echo,
    "hello": handle_hello,
    "sink": drain_until_eof,
    "http": handle_http,
}


def quiet(handler: Handler) -> Handler:
    """Close the stream when done and swallow per-connection errors."""

    async def wrapped(stream: SocketStream) -> None:
        try:
            async with stream:
                await handler(stream)
        except PEER_ERRORS:
            pass

    return wrapped


def raise_nofile_limit() -> None:
    if sys.platform == "win32":
        return  # no descriptor limit to raise
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def serve(mode: str, backlog: int) -> None:
    listener = await anyio.create_tcp_listener(
        local_host="127.0.0.1", local_port=0, backlog=backlog
    )
    port = listener.extra(SocketAttribute.local_port)
    print(port, flush=True)
    await listener.serve(quiet(HANDLERS[mode]))


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or argv[1] not in BACKENDS or argv[2] not in HANDLERS:
        print(__doc__, file=sys.stderr)
        return 2
    backend, options = BACKENDS[argv[1]]
    backlog = int(argv[3]) if len(argv) == 4 else DEFAULT_BACKLOG
    raise_nofile_limit()
    os.environ.update(BACKEND_ENV.get(argv[1], {}))
    anyio.run(serve, argv[2], backlog, backend=backend, backend_options=options)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
