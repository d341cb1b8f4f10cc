"""10,000 concurrent connections on each engine, echoing random sizes with
every byte checked by the client; resident memory per connection reported
(run with ``-s`` to see it)."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream
from helpers import first_listener

import anyio_iocp

if sys.platform == "win32":
    pytest.skip(
        "descriptor limits (RLIMIT_NOFILE, the resource module) are POSIX's",
        allow_module_level=True,
    )
import resource

CONNECTIONS = 10_000
ROUNDS = 3
CLIENT = Path(__file__).with_name("load_client.py")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * _PAGE


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < CONNECTIONS + 100:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {CONNECTIONS + 100}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.heavy
def test_ten_thousand_connections(engine_name: str, many_descriptors: None) -> None:
    figures: dict[str, int] = {}

    async def main() -> None:
        multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=512)
        listener = first_listener(multi)
        port = listener.extra(SocketAttribute.local_port)
        figures["rss_before"] = rss_bytes()
        figures["echoed"] = figures["active"] = figures["peak"] = figures["answered"] = 0

        async def echo(stream: SocketStream) -> None:
            figures["active"] += 1
            figures["peak"] = max(figures["peak"], figures["active"])
            first = True
            try:
                async with stream:
                    while True:
                        data = await stream.receive()
                        await stream.send(data)
                        figures["echoed"] += len(data)
                        if first:
                            first = False
                            figures["answered"] += 1
                            if figures["answered"] == CONNECTIONS:
                                # every connection open, each waiting in receive()
                                await anyio.sleep(0.5)
                                figures["rss_held"] = rss_bytes()
            except anyio.EndOfStream:
                pass
            finally:
                figures["active"] -= 1

        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, echo)
            command = [sys.executable, str(CLIENT), engine_name, str(port)]
            command += [str(CONNECTIONS), str(ROUNDS), "1"]
            result = await anyio.run_process(command, check=False)
            assert result.returncode == 0, result.stderr.decode()[-3000:]
            words = result.stdout.decode().split()
            figures["verified"], figures["wrong"] = int(words[1]), int(words[3])
            with anyio.fail_after(30):
                while figures["active"]:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
        await multi.aclose()

    gc.collect()
    figures["fds_before"] = open_fds()
    anyio.run(main, backend="iocp", backend_options={"engine": engine_name})
    gc.collect()
    figures["fds_after"] = open_fds()  # every socket and the ring closed
    assert figures["peak"] == CONNECTIONS
    assert figures["wrong"] == 0
    assert figures["verified"] == figures["echoed"] > CONNECTIONS * ROUNDS
    assert figures["fds_after"] == figures["fds_before"]
    per_connection = (figures["rss_held"] - figures["rss_before"]) / CONNECTIONS
    print(
        f"\n{engine_name}: {CONNECTIONS:,} connections held at once, "
        f"{figures['verified']:,} bytes echoed and verified, server RSS "
        f"{figures['rss_before'] / 2**20:.1f} -> {figures['rss_held'] / 2**20:.1f} MiB "
        f"= {per_connection / 1024:.1f} KiB per connection"
    )
