"""Plain httpx code, run by tests/test_adapters.py in a process of its own.

It does not import anyio_iocp and does not call ``enable_for``: the installed
``.pth`` hook is its only link to the ``"iocp"`` backend, and the library
adapters must apply by themselves.  The same ``main`` runs on each backend
named on the command line, one ``anyio.run`` after the other in this process.

In each run it fetches every static file of the nginx that the test started,
over HTTP and HTTPS, and talks to the h11 server (tests/h11_server.py) started
in the same run, over HTTP and HTTPS; every response body is checked.  It
prints one JSON line per backend.

Usage: ``python httpx_unchanged.py CONFIG.json BACKEND...``; the configuration
holds the nginx URLs, the files' names, sizes and SHA-256, and the PEM files
of the CA and of the server certificate.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import sniffio
from h11_server import Stats, echo_body, serve

ROUNDS = 3  # each file, each scheme
TASKS = 4
H11_REQUESTS = 40

#: (URL, POST body or None for a GET, SHA-256 of the expected body)
Job = tuple[str, bytes | None, str]


def innermost_stream_module(response: httpx.Response) -> str:
    """The module of the AnyIO stream under httpcore's connection (under TLS if any)."""
    stream: Any = response.extensions["network_stream"]._stream  # httpcore's AnyIOStream
    stream = getattr(stream, "transport_stream", stream)  # anyio's TLSStream
    return type(stream).__module__


async def fetch(client: httpx.AsyncClient, jobs: list[Job], modules: set[str]) -> int:
    """Run (url, POST body or None, expected SHA-256) jobs from TASKS tasks;
    each body checked."""
    checked = 0
    pending = list(reversed(jobs))

    async def worker() -> None:
        nonlocal checked
        while pending:
            url, body, digest = pending.pop()
            if body is None:
                response = await client.get(url)
            else:
                response = await client.post(url, content=body)
            assert response.status_code == 200, (url, response.status_code)
            assert response.http_version == "HTTP/1.1"
            got = hashlib.sha256(response.content).hexdigest()
            assert got == digest, f"{url}: body of {len(response.content)} bytes differs"
            modules.add(innermost_stream_module(response))
            checked += 1

    async with anyio.create_task_group() as tg:
        for _ in range(TASKS):
            tg.start_soon(worker)
    return checked


async def main(config: dict[str, Any]) -> dict[str, Any]:
    ca = ssl.create_default_context(cafile=config["ca"])
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(config["cert"], config["key"])
    modules: set[str] = set()
    result: dict[str, Any] = {"library": sniffio.current_async_library()}
    async with httpx.AsyncClient(verify=ca) as client:
        nginx_jobs: list[Job] = [
            (f"{base}/{name}", None, digest)
            for _ in range(ROUNDS)
            for base in (config["nginx_http"], config["nginx_https"])
            for name, (_size, digest) in config["files"].items()
        ]
        result["nginx_checked"] = await fetch(client, nginx_jobs, modules)
        stats = Stats()
        async with anyio.create_task_group() as tg:
            jobs: list[Job] = []
            for tls in (False, True):
                port = await tg.start(serve, stats, server_context if tls else None)
                base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
                for i in range(H11_REQUESTS):
                    if i % 2:
                        payload = f"{i}:".encode() * (i * 97)
                        digest = hashlib.sha256(payload[::-1]).hexdigest()
                        jobs.append((f"{base}/reverse", payload, digest))
                    else:
                        digest = hashlib.sha256(echo_body(f"t{i}")).hexdigest()
                        jobs.append((f"{base}/echo/t{i}", None, digest))
            result["h11_checked"] = await fetch(client, jobs, modules)
            result["h11_served"] = stats.requests
            tg.cancel_scope.cancel()
    result["stream_modules"] = sorted(modules)
    return result


def run() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    # nothing has loaded the backend yet: the .pth hook is the only link
    print(json.dumps({"anyio_iocp_imported": "anyio_iocp" in sys.modules}), flush=True)
    for backend in sys.argv[2:]:
        print(json.dumps(anyio.run(main, config, backend=backend)), flush=True)


if __name__ == "__main__":
    run()
