"""A closed connection is freed when its last reference goes, not later by
CPython's cycle collector.

A reference cycle through a stream keeps its socket object, its buffers and
everything they hold alive until the collector runs, and makes the collector
run: with a cycle per connection, a server that accepts thousands of short
connections spends part of its time in ``gc`` (seen in a ``perf`` profile of
the churn benchmark: the multishot receiver and its stream referred to each
other).  Trio's own sockets leave no such garbage.
"""

from __future__ import annotations

import gc
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from anyio_iocp._face.runstate import current_engine

pytestmark = pytest.mark.anyio

CONNECTIONS = 20


@contextmanager
def cyclic_garbage() -> Iterator[Counter[str]]:
    """Counts, by type, the objects only the cycle collector frees, among
    those made inside the block (anyio_iocp's objects and sockets)."""
    found: Counter[str] = Counter()
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection frees goes to gc.garbage
    try:
        yield found
        gc.collect()
        for obj in gc.garbage:
            kind = type(obj)
            if kind.__module__.startswith("anyio_iocp") or kind.__qualname__ == "socket":
                found[f"{kind.__module__}.{kind.__qualname__}"] += 1
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def serve_one_exchange(stream: SocketStream) -> None:
    async with stream:
        with suppress(anyio.EndOfStream):
            while True:
                await stream.send(b"back " + await stream.receive())


async def test_closed_connections_leave_no_cyclic_garbage(anyio_backend: object) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve_one_exchange)
        # busy streams first (multishot receives armed), then short ones
        async with await anyio.connect_tcp("127.0.0.1", port) as warm:
            await warm.send(b"warm-up")
            await warm.receive()
        await anyio.sleep(0.05)
        with cyclic_garbage() as found:
            for i in range(CONNECTIONS):
                client = await anyio.connect_tcp("127.0.0.1", port)
                await client.send(b"hello %d" % i)
                assert await client.receive() == b"back hello %d" % i
                for _ in range(8):  # wait with multishot receives too (BUSY_AFTER)
                    await client.send(b"more")
                    assert await client.receive() == b"back more"
                await client.aclose()
            await anyio.sleep(0.05)  # the handlers close their ends
        tg.cancel_scope.cancel()
    assert found == Counter()


def test_a_finished_run_frees_its_engine_without_the_cycle_collector(
    engine_name: str,
) -> None:
    """Nothing of a run's engine is left for the cycle collector once
    ``anyio.run`` returns (the per-pass hooks of ``_internals/pass_hooks.py`` included)."""

    async def main() -> weakref.ref[object]:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        async with (
            listener,
            await anyio.connect_tcp("127.0.0.1", listener.extra(SocketAttribute.local_port)),
        ):
            pass
        return weakref.ref(current_engine())

    gc.collect()
    gc.disable()
    try:
        engine = anyio.run(main, backend="iocp", backend_options={"engine": engine_name})
        assert engine() is None, "the engine is only freed by the cycle collector"
    finally:
        gc.enable()


async def test_a_refused_connect_error_is_referred_to_by_nothing(anyio_backend: object) -> None:
    """The error of a refused connect (raised at once on loopback: the RST is
    back before connect() returns) is held by no frame of its traceback:
    kept in a local variable, it would make a cycle through the frame (AnyIO's
    ``test_happy_eyeballs_refcycles`` checks this on every backend)."""
    import socket

    from anyio._core._eventloop import get_async_backend

    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    error: OSError | None = None
    try:
        await get_async_backend().connect_tcp("127.0.0.1", port)
    except OSError as exc:
        error = exc
    assert isinstance(error, ConnectionRefusedError)
    assert gc.get_referrers(error) == []
