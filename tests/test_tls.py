"""TLS over the engine's TCP streams: AnyIO layers TLSStream on top of them."""

from __future__ import annotations

import ssl

import anyio
import pytest
import trustme
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSListener, TLSStream
from helpers import first_listener

from anyio_iocp._streams.sockets import EngineSocketStream

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


async def test_tls_echo(ca: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    payload = bytes(range(256)) * 400

    async def handler(stream: TLSStream) -> None:
        async with stream:
            data = b""
            while len(data) < len(payload):
                data += await stream.receive()
            await stream.send(data[::-1])

    tcp = first_listener(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    port = tcp.extra(SocketAttribute.local_port)
    listener = TLSListener(tcp, server_context, standard_compatible=False)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        async with await anyio.connect_tcp(
            "localhost", port, ssl_context=client_context, tls_standard_compatible=False
        ) as client:
            assert isinstance(client, TLSStream)
            assert isinstance(client.transport_stream, EngineSocketStream)
            assert client.extra(TLSAttribute.tls_version).startswith("TLS")
            await client.send(payload)
            received = b""
            while len(received) < len(payload):
                received += await client.receive()
            assert received == payload[::-1]
        tg.cancel_scope.cancel()
