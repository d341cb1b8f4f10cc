"""Real AnyIO-based libraries, unchanged, on the ``"iocp"`` backend.

* httpx.AsyncClient (httpcore's AnyIO code, through the library adapters, which
  apply by default; tests/test_adapters.py tests that, these tests call
  ``anyio_iocp.enable_for``)
  making many requests with keep-alive, over plain TCP and TLS, to two real
  servers on loopback: Python's ``http.server`` in a thread, and an AnyIO server
  on h11 (tests/h11_server.py) in the same run.
* Starlette, through httpx's ASGITransport.
* The h11 server, alone in a process on iocp, answering Debian's ``wrk``, with
  every response checked by a Lua script (tests/wrk_check.lua).

See docs/compat.md.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import httpcore
import httpx
import pytest
import sniffio
import trustme
from anyio.abc import IPSockAddrType, SocketAttribute, SocketStream, TaskStatus
from h11_server import Stats, echo_body, respond, serve, serve_connection
from helpers import explicit_adapters_cleared
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

import anyio_iocp
from anyio_iocp._face.backend import IocpBackend
from anyio_iocp._face.libcompat import SUPPORTED_LIBRARIES
from anyio_iocp._streams.sockets import EngineSocketStream, EngineUNIXSocketStream

HERE = Path(__file__).parent
REQUESTS = 200
CONCURRENCY = 8
WRK_CONNECTIONS = 16


# -- fixtures ----------------------------------------------------------------


@pytest.fixture
def adapted() -> Iterator[None]:
    """``enable_for("httpx")`` for one test, then the state from before."""
    before = anyio_iocp.enabled_libraries()
    anyio_iocp.enable_for("httpx")
    yield
    for library in ("httpx", "httpcore"):
        if library not in before:
            anyio_iocp.disable_for(library)


@pytest.fixture
def not_adapted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Adapters off for the test (``$ANYIO_IOCP_ADAPTERS=0``, so that no run
    puts them in place), the libraries' own functions back, then the explicit
    state from before."""
    monkeypatch.setenv("ANYIO_IOCP_ADAPTERS", "0")
    with explicit_adapters_cleared(SUPPORTED_LIBRARIES):
        yield


@pytest.fixture
def client_streams(monkeypatch: pytest.MonkeyPatch) -> list[tuple[SocketStream, int]]:
    """Every stream the iocp backend's connect_tcp returns during the test,
    with its local port."""
    streams: list[tuple[SocketStream, int]] = []
    original = IocpBackend.connect_tcp

    async def connect_tcp(
        cls: type[IocpBackend], host: str, port: int, local_address: IPSockAddrType | None = None
    ) -> SocketStream:
        stream = await original(host, port, local_address)
        streams.append((stream, stream.extra(SocketAttribute.local_port)))
        return stream

    monkeypatch.setattr(IocpBackend, "connect_tcp", classmethod(connect_tcp))
    return streams


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture(scope="module")
def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


# -- Python's http.server, in a thread -----------------------------------------


class StdlibHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True  # headers and body go out in two writes
    server: StdlibServer

    def do_GET(self) -> None:
        self._reply(b"GET")

    def do_POST(self) -> None:
        self._reply(b"POST")

    def _reply(self, method: bytes) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        status, payload = respond(method, self.path.encode(), body)
        with self.server.lock:  # before the client can see the response
            self.server.stats.requests += 1
        self.send_response(status)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class StdlibServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", 0), StdlibHandler)
        self.stats = Stats()
        self.lock = threading.Lock()
        self.ssl_context = ssl_context

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:  # handshake in the handler's thread
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.stats.connections += 1
            self.stats.peers.append(client_address)
        super().process_request(request, client_address)


# -- the client side -----------------------------------------------------------


async def fetch_all(client: httpx.AsyncClient, base: str) -> tuple[int, set[bool]]:
    """REQUESTS requests from CONCURRENCY tasks, each response checked.

    Returns how many were checked, and the set of "was it TLS" over them.
    """
    next_index = 0
    checked = 0
    tls: set[bool] = set()

    async def worker() -> None:
        nonlocal next_index, checked
        while next_index < REQUESTS:
            i = next_index
            next_index += 1
            if i % 4 == 3:
                payload = f"request {i} ".encode() * (i * 37 % 3000)
                response = await client.post(f"{base}/reverse", content=payload)
                expected = payload[::-1]
            else:
                token = f"r{i}"
                response = await client.get(f"{base}/echo/{token}")
                expected = echo_body(token)
            assert response.status_code == 200
            assert response.http_version == "HTTP/1.1"
            assert response.content == expected
            network_stream = response.extensions["network_stream"]
            tls.add(network_stream.get_extra_info("ssl_object") is not None)
            checked += 1

    async with anyio.create_task_group() as tg:
        for _ in range(CONCURRENCY):
            tg.start_soon(worker)
    return checked, tls


def check_connections(
    stats: Stats, streams: list[tuple[SocketStream, int]], engine_name: str, checked: int
) -> None:
    assert checked == REQUESTS
    assert stats.requests == REQUESTS
    # every client connection went through the engine of this run...
    assert streams
    for stream, _port in streams:
        assert isinstance(stream, EngineSocketStream)
        assert stream.engine_info.name == engine_name
    # ...each is one the server accepted, and keep-alive reused them: at most
    # one connection per concurrent task (httpx's pool allows 100)
    assert stats.connections == len(streams)
    assert 1 <= stats.connections <= CONCURRENCY
    assert sorted(port for _host, port in stats.peers) == sorted(port for _s, port in streams)


# -- the tests -------------------------------------------------------------------


@pytest.mark.anyio
async def test_httpx_over_a_unix_socket(adapted: None, engine_name: str, tmp_path: Path) -> None:
    """httpx's ``uds=`` transport: both ends are UNIX streams of the engine."""
    stats = Stats()
    server_streams: list[object] = []
    listener = await anyio.create_unix_listener(tmp_path / "http.sock")

    async def handle(stream: SocketStream) -> None:
        server_streams.append(stream)
        stats.connections += 1
        await serve_connection(stream, stats)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        transport = httpx.AsyncHTTPTransport(uds=str(tmp_path / "http.sock"))
        async with httpx.AsyncClient(transport=transport) as client:
            checked, tls_seen = await fetch_all(client, "http://localhost")
        tg.cancel_scope.cancel()
    assert checked == stats.requests == REQUESTS
    assert tls_seen == {False}
    assert 1 <= stats.connections <= CONCURRENCY  # keep-alive reused them
    for stream in server_streams:
        assert isinstance(stream, EngineUNIXSocketStream)
        assert stream.engine_info.name == engine_name


@pytest.mark.anyio
async def test_httpcore_refuses_iocp_without_the_adapter(not_adapted: None) -> None:
    # The reason enable_for exists.  If this fails, httpcore accepts unknown
    # backends now: docs/compat.md and the adapter should say so.
    assert sniffio.current_async_library() == "iocp"
    # (closing the client raises it too)
    with pytest.raises(RuntimeError, match="unsupported async environment"):
        async with httpx.AsyncClient() as client:
            await client.get("http://127.0.0.1:9/")
    # httpcore's own AnyIO network backend, passed explicitly, does not avoid
    # it: the pool's locks and shields ask sniffio too
    with pytest.raises(RuntimeError, match="unsupported async environment"):
        async with httpcore.AsyncConnectionPool(network_backend=httpcore.AnyIOBackend()) as pool:
            await pool.request("GET", "http://127.0.0.1:9/")


@pytest.mark.anyio
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_httpx_keep_alive_to_h11_server_in_the_run(
    adapted: None,
    client_streams: list[tuple[SocketStream, int]],
    engine_name: str,
    tls: bool,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    stats = Stats()
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, stats, server_context if tls else None)
        scheme = "https" if tls else "http"
        async with httpx.AsyncClient(verify=client_context) as client:
            checked, tls_seen = await fetch_all(client, f"{scheme}://127.0.0.1:{port}")
        tg.cancel_scope.cancel()
    assert tls_seen == {tls}
    assert sniffio.current_async_library() == "iocp"  # unchanged for everyone else
    check_connections(stats, client_streams, engine_name, checked)


@pytest.mark.anyio
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_httpx_keep_alive_to_stdlib_server(
    adapted: None,
    client_streams: list[tuple[SocketStream, int]],
    engine_name: str,
    tls: bool,
    server_context: ssl.SSLContext,
    client_context: ssl.SSLContext,
) -> None:
    server = StdlibServer(server_context if tls else None)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        scheme = "https" if tls else "http"
        async with httpx.AsyncClient(verify=client_context) as client:
            checked, tls_seen = await fetch_all(
                client, f"{scheme}://127.0.0.1:{server.server_port}"
            )
    finally:
        await anyio.to_thread.run_sync(server.shutdown)
        server.server_close()
    assert tls_seen == {tls}
    with server.lock:
        check_connections(server.stats, client_streams, engine_name, checked)


@pytest.mark.anyio
async def test_httpx_asgi_transport_waits_for_disconnect(adapted: None) -> None:
    # Without the httpx adapter, ASGITransport gives an app that waits for
    # http.disconnect an asyncio.Event, which cannot be awaited outside asyncio.
    seen: list[str] = []

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        body = b""
        while True:  # the request body, to its end
            message = await receive()
            seen.append(message["type"])
            body += message["body"]
            if not message["more_body"]:
                break

        async def wait_for_disconnect(*, task_status: TaskStatus[None]) -> None:
            task_status.started()  # the response is sent while this task waits
            seen.append((await receive())["type"])

        async with anyio.create_task_group() as tg:
            await tg.start(wait_for_disconnect)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body[::-1]})

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.post("/", content=b"abc")
    assert response.content == b"cba"
    assert seen[-1] == "http.disconnect"
    assert set(seen[:-1]) == {"http.request"}


@pytest.mark.anyio
async def test_starlette_streaming_through_httpx_asgi_transport(adapted: None) -> None:
    # Starlette's StreamingResponse listens for http.disconnect while it
    # streams: the case of the test above, in a real framework.
    async def numbers(request: Request) -> StreamingResponse:
        count = int(request.path_params["count"])

        async def lines() -> AsyncIterator[bytes]:
            for i in range(count):
                yield f"{i}\n".encode()
                await anyio.sleep(0)

        return StreamingResponse(lines())

    async def reverse(request: Request) -> JSONResponse:
        return JSONResponse({"reversed": (await request.body()).decode()[::-1]})

    app = Starlette(
        routes=[
            Route("/numbers/{count:int}", numbers),
            Route("/reverse", reverse, methods=["POST"]),
        ]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        for count in (0, 1, 50):
            response = await client.get(f"/numbers/{count}")
            assert response.status_code == 200
            assert response.text == "".join(f"{i}\n" for i in range(count))
        response = await client.post("/reverse", content=b"iocp")
        assert response.json() == {"reversed": "pcoi"}


def test_adapter_changes_nothing_outside_iocp(adapted: None) -> None:
    from httpcore import _synchronization

    async def names() -> tuple[str, str]:
        return sniffio.current_async_library(), _synchronization.current_async_library()

    assert anyio.run(names, backend="iocp") == ("iocp", "asyncio")  # httpcore's AnyIO code
    assert anyio.run(names, backend="trio") == ("trio", "trio")
    assert anyio.run(names, backend="asyncio") == ("asyncio", "asyncio")
    with pytest.raises(sniffio.AsyncLibraryNotFoundError):
        _synchronization.current_async_library()


def test_enable_and_disable(not_adapted: None) -> None:
    from httpcore import _synchronization
    from httpcore._backends import auto
    from httpx._transports import asgi

    originals = (_synchronization.current_async_library, vars(auto)["current_async_library"])
    original_event = asgi.create_event
    anyio_iocp.enable_for("httpx")
    anyio_iocp.enable_for("httpx")  # idempotent: wrapped once
    assert anyio_iocp.enabled_libraries() == ("httpcore", "httpx")
    wrapped = (_synchronization.current_async_library, vars(auto)["current_async_library"])
    assert not set(wrapped) & set(originals)
    assert asgi.create_event is not original_event
    anyio_iocp.disable_for("httpx")
    assert asgi.create_event is original_event
    assert anyio_iocp.enabled_libraries() == ("httpcore",)  # httpcore stays
    anyio_iocp.disable_for("httpcore")
    assert (
        _synchronization.current_async_library,
        vars(auto)["current_async_library"],
    ) == originals
    assert anyio_iocp.enabled_libraries() == ()
    with pytest.raises(
        ValueError, match="'asgi_lifespan', 'asyncer', 'httpcore', 'httpcore2', 'httpx', 'httpx2'"
    ):
        anyio_iocp.enable_for("aiohttp")


# -- wrk against the h11 server, each engine ---------------------------------------


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        if os.geteuid() == 0:
            pytest.fail(
                "wrk is missing: scripts/setup.sh installs it as root (apt-get install wrk)"
            )
        pytest.skip(
            "wrk is not installed, and installing it needs root (Debian: apt-get install wrk)"
        )
    return path


def test_h11_server_answers_wrk(engine_name: str) -> None:
    wrk = wrk_path()
    server = subprocess.Popen(
        [sys.executable, str(HERE / "h11_server.py"), "--engine", engine_name],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        started = json.loads(server.stdout.readline())
        assert started["library"] == "iocp"
        assert started["engine"] == engine_name
        run = subprocess.run(
            [
                *(wrk, "-t1", f"-c{WRK_CONNECTIONS}", "-d2s", "--timeout", "10s"),
                *("-s", str(HERE / "wrk_check.lua"), f"http://127.0.0.1:{started['port']}/"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=30)
    finally:
        if server.returncode is None:
            server.kill()
            server.wait()
    assert server.returncode == 0
    stats = json.loads(out)
    match = re.search(r"^RESULT (.*)$", run.stdout, re.MULTILINE)
    assert match, run.stdout + run.stderr
    counts = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}
    print(run.stdout, stats)
    assert counts["requests"] > 0
    assert counts["checked"] == counts["requests"]  # every response went through the check
    assert counts["mismatches"] == 0, run.stdout
    for error in ("connect", "read", "write", "status", "timeout"):
        assert counts[error] == 0, run.stdout
    # each connection has at most one request in flight when wrk stops
    assert counts["checked"] <= stats["requests"] <= counts["checked"] + WRK_CONNECTIONS
    # keep-alive held: wrk's connections, plus the one wrk opens first to test
    # the address, and no reconnection
    assert WRK_CONNECTIONS <= stats["connections"] <= WRK_CONNECTIONS + 1
