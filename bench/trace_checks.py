"""How often the trace's off-switch (``anyio_iocp._interface.trace.active``) is read
per echoed message: the trace's whole cost when it is off.

One AnyIO echo run on backend "iocp", client and server in the same run, with
the switch replaced by a property that counts its reads.  ``--loop N`` instead
reads the switch N times in a plain loop (``--loop-empty N``: the same loop
without the read), for callgrind to count what one read costs:

    valgrind --tool=callgrind python bench/trace_checks.py --loop 1000000
    valgrind --tool=callgrind python bench/trace_checks.py --loop-empty 1000000

usage: python bench/trace_checks.py [--engine E] | --loop N | --loop-empty N
"""

from __future__ import annotations

import argparse
import types

import anyio
from anyio.abc import SocketAttribute, SocketStream

from anyio_iocp._interface import trace as _trace

MESSAGE = b"x" * 64


class _CountingModule(types.ModuleType):
    reads = 0

    @property
    def active(self) -> bool:
        _CountingModule.reads += 1
        return False


async def echo_run(connections: int, messages: int) -> int:
    """Reads of the switch while ``connections`` clients each exchange
    ``messages`` messages with the echo server."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)

    async def echo(stream: SocketStream) -> None:
        async with stream:
            try:
                while True:
                    await stream.send(await stream.receive())
            except anyio.EndOfStream:
                pass

    async def client(stream: SocketStream) -> None:
        for _ in range(messages):
            await stream.send(MESSAGE)
            received = 0
            while received < len(MESSAGE):
                received += len(await stream.receive())

    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, echo)
        clients = [await anyio.connect_tcp("127.0.0.1", port) for _ in range(connections)]
        _CountingModule.reads = 0
        async with anyio.create_task_group() as group:
            for stream in clients:
                group.start_soon(client, stream)
        reads = _CountingModule.reads
        for stream in clients:
            await stream.aclose()
        tg.cancel_scope.cancel()
    return reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--loop", type=int)
    parser.add_argument("--loop-empty", type=int)
    args = parser.parse_args()
    if args.loop is not None:
        for _ in range(args.loop):
            if _trace.active:
                pass
        return
    if args.loop_empty is not None:
        for _ in range(args.loop_empty):
            pass
        return
    _trace.__class__ = _CountingModule
    for connections, messages in ((1, 2000), (64, 100)):
        reads = anyio.run(
            echo_run, connections, messages, backend="iocp", backend_options={"engine": args.engine}
        )
        trips = connections * messages
        print(
            f"{connections} connections: {reads} reads for {trips} round trips "
            f"= {reads / trips:.3f} per round trip"
        )


if __name__ == "__main__":
    main()
