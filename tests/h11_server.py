"""A small HTTP/1.1 server on AnyIO and h11, used by tests/test_real_libraries.py.

It is written against AnyIO's API only, so it runs on any backend; the tests
run it on ``"iocp"``.  Routes (every body is a function of the request, so a
client can check each response):

* ``GET /echo/<token>``: ``token=<token>;`` followed by ``body_for(token)``
* ``POST /reverse``: the request body, reversed
* anything else: 404

Run as a script (``python tests/h11_server.py --engine io_uring``), it serves on
an ephemeral port of 127.0.0.1, prints one JSON line with the port and the
engine, and on SIGTERM prints one JSON line with its counters and exits.
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
from dataclasses import dataclass, field

import anyio
import h11
import sniffio
from anyio.abc import ByteStream, SocketAttribute, SocketListener, TaskStatus
from anyio.streams.tls import TLSListener

MAX_RECEIVE = 65536


def body_for(token: str) -> bytes:
    """The part of an ``/echo/<token>`` body after ``token=<token>;``.

    Its length (0 to 4095 bytes) and content both depend on the token; the
    same function is written in Lua in tests/wrk_check.lua.
    """
    unit = token.encode() + b"."
    size = sum(unit[:-1]) * 7919 % 4096
    return (unit * (size // len(unit) + 1))[:size]


def echo_body(token: str) -> bytes:
    return b"token=" + token.encode() + b";" + body_for(token)


@dataclass
class Stats:
    connections: int = 0
    requests: int = 0
    #: peer (host, port) of every accepted connection
    peers: list[tuple[str, int]] = field(default_factory=list)


def respond(method: bytes, target: bytes, body: bytes) -> tuple[int, bytes]:
    if method == b"GET" and target.startswith(b"/echo/"):
        return 200, echo_body(target[len(b"/echo/") :].decode())
    if method == b"POST" and target == b"/reverse":
        return 200, body[::-1]
    return 404, b"not found\n"


async def serve_connection(stream: ByteStream, stats: Stats) -> None:
    conn = h11.Connection(h11.SERVER)
    async with stream:
        try:
            while True:
                request: h11.Request | None = None
                body = bytearray()
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        try:
                            data = await stream.receive(MAX_RECEIVE)
                        except anyio.EndOfStream:
                            data = b""
                        conn.receive_data(data)
                    elif isinstance(event, h11.Request):
                        request = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert request is not None
                status, payload = respond(request.method, request.target, bytes(body))
                headers = [
                    (b"content-type", b"application/octet-stream"),
                    (b"content-length", str(len(payload)).encode()),
                ]
                events = (
                    h11.Response(status_code=status, headers=headers),
                    h11.Data(data=payload),
                    h11.EndOfMessage(),
                )
                stats.requests += 1  # before the client can see the response
                await stream.send(b"".join(conn.send(e) or b"" for e in events))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return  # the client asked to close, or HTTP/1.0
                conn.start_next_cycle()
        except (anyio.BrokenResourceError, h11.RemoteProtocolError):
            return  # the peer went away (wrk resets its connections at the end)


async def serve(
    stats: Stats,
    ssl_context: ssl.SSLContext | None = None,
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on 127.0.0.1 until cancelled; ``task_status.started`` gets the port."""
    listeners = (await anyio.create_tcp_listener(local_host="127.0.0.1")).listeners
    tcp = listeners[0]
    assert isinstance(tcp, SocketListener)

    async def handle(stream: ByteStream) -> None:
        stats.connections += 1
        stats.peers.append(stream.extra(SocketAttribute.remote_address))  # type: ignore[arg-type]
        await serve_connection(stream, stats)

    port = tcp.extra(SocketAttribute.local_port)
    async with tcp:
        if ssl_context is None:
            task_status.started(port)
            await tcp.serve(handle)
        else:
            tls = TLSListener(tcp, ssl_context, standard_compatible=False)
            task_status.started(port)
            await tls.serve(handle)


async def main_process() -> None:
    import anyio_iocp

    stats = Stats()
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, stats)
            library = sniffio.current_async_library()
            engine = anyio_iocp.engine_info().name if library == "iocp" else None
            print(json.dumps({"port": port, "library": library, "engine": engine}), flush=True)
            async for _ in signals:
                tg.cancel_scope.cancel()
                break
    print(json.dumps({"connections": stats.connections, "requests": stats.requests}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", default="iocp")
    parser.add_argument("--engine", default="auto")
    args = parser.parse_args()
    options = {"engine": args.engine} if args.backend == "iocp" else {}
    anyio.run(main_process, backend=args.backend, backend_options=options)


if __name__ == "__main__":
    main()
