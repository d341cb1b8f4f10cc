"""Several threads, each running its own anyio.run(..., backend="iocp") at once."""

from __future__ import annotations

import threading

import anyio
import sniffio
from anyio.abc import SocketAttribute, SocketStream
from helpers import first_listener, recv_exactly

from anyio_iocp._face.runstate import current_engine


def test_threads_each_have_their_own_engine(engine_name: str) -> None:
    results: dict[int, tuple[int, str, int]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    async def echo(stream: SocketStream) -> None:
        async with stream:
            async for chunk in stream:
                await stream.send(chunk)

    async def main(index: int) -> None:
        multi = await anyio.create_tcp_listener(local_host="127.0.0.1")
        listener = first_listener(multi)
        async with multi, anyio.create_task_group() as tg:
            tg.start_soon(multi.serve, echo)
            port = listener.extra(SocketAttribute.local_port)
            messages = 0
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                for n in range(300):
                    message = b"thread %d message %d" % (index, n)
                    await client.send(message)
                    assert await recv_exactly(client, len(message)) == message
                    messages += 1
            results[index] = (
                id(current_engine()),
                sniffio.current_async_library(),
                messages,
            )
            tg.cancel_scope.cancel()

    def thread(index: int) -> None:
        try:
            start.wait()
            anyio.run(main, index, backend="iocp", backend_options={"engine": engine_name})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert sorted(results) == [0, 1, 2, 3]
    engines = {engine_id for engine_id, _, _ in results.values()}
    assert len(engines) == 4, "each run has its own engine"
    assert {name for _, name, _ in results.values()} == {"iocp"}
    assert all(messages == 300 for _, _, messages in results.values())
