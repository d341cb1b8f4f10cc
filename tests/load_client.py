"""Client side of tests/test_load.py, run as a subprocess:

    python tests/load_client.py ENGINE PORT CONNECTIONS ROUNDS SEED

Opens CONNECTIONS connections to an echo server, sends ROUNDS messages of
random size on each (every connection is open at once after the first round)
and checks every echoed byte.  Prints one line: ``verified BYTES wrong N``.
"""

from __future__ import annotations

import random
import resource
import sys

import anyio
from anyio.abc import SocketStream


async def exchange(stream: SocketStream, rng: random.Random) -> tuple[int, int]:
    message = rng.randbytes(rng.choice((1, rng.randint(1, 2000), rng.randint(2000, 40000))))
    async with anyio.create_task_group() as tg:
        tg.start_soon(stream.send, message)
        received = bytearray()
        while len(received) < len(message):
            received += await stream.receive()
    return len(received), int(received != message)


async def main(port: int, connections: int, rounds: int, seed: int) -> None:
    everyone_open = anyio.Event()
    opened = 0
    verified = wrong = 0
    connect_slots = anyio.Semaphore(500)  # no SYN storm larger than the listen queue

    async def one(i: int) -> None:
        nonlocal opened, verified, wrong
        rng = random.Random(seed * 1_000_003 + i)
        async with connect_slots:
            stream = await anyio.connect_tcp("127.0.0.1", port)
        async with stream:
            for round_ in range(rounds):
                n, bad = await exchange(stream, rng)
                verified += n
                wrong += bad
                if round_ == 0:
                    opened += 1
                    if opened == connections:
                        everyone_open.set()
                    await everyone_open.wait()

    async with anyio.create_task_group() as tg:
        for i in range(connections):
            tg.start_soon(one, i)
    print(f"verified {verified} wrong {wrong}", flush=True)


if __name__ == "__main__":
    engine, port, connections, rounds, seed = sys.argv[1], *map(int, sys.argv[2:6])
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    anyio.run(
        main, port, connections, rounds, seed, backend="iocp", backend_options={"engine": engine}
    )
