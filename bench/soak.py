"""Soak: connect / exchange / close, over and over, on one engine of the iocp
backend, sampling open descriptors and resident memory throughout.

    .venv/bin/python bench/soak.py --engine io_uring              # 1,000,000 cycles
    .venv/bin/python bench/soak.py --engine readiness --cycles 200000 --csv soak.csv

One process holds both ends, so both the connecting and the accepting side of
the engine are soaked.  ``--concurrency`` client tasks each repeat: connect,
send a random-size message (1 to ``--max-size`` bytes), read the echo and
check every byte, close.  A server task per accepted connection echoes until
end of stream and closes.  Every ``--sample-every`` cycles the descriptors in
``/proc/self/fd`` and the resident set size are sampled.

At the end it prints the samples' summary: descriptors and RSS at the first
sample after warm-up (10% of the cycles) and at the last, their minimum and
maximum after warm-up, and the growth per 100,000 cycles of a least-squares
line through the samples after warm-up.  Exit status 1 if a byte was wrong.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream

_PAGE = os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * _PAGE


@dataclass
class Soak:
    cycles: int
    sample_every: int
    max_size: int
    done: int = 0
    verified_bytes: int = 0
    errors: int = 0
    samples: list[tuple[int, float, int, int]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def sample(self) -> None:
        row = (self.done, time.monotonic() - self.started, open_fds(), rss_bytes())
        self.samples.append(row)
        print(
            f"cycles {row[0]:>9,}  t {row[1]:7.1f}s  fds {row[2]:>5}  "
            f"rss {row[3] / 2**20:7.1f} MiB",
            file=sys.stderr,
            flush=True,
        )


async def echo(stream: SocketStream) -> None:
    async with stream:
        try:
            while True:
                await stream.send(await stream.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass


async def client(soak: Soak, port: int, seed: int, take: Any) -> None:
    rng = random.Random(seed)
    while take():
        message = rng.randbytes(rng.randint(1, soak.max_size))
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(message)
            received = bytearray()
            while len(received) < len(message):
                received += await stream.receive()
        if received != message:
            soak.errors += 1
        soak.verified_bytes += len(received)
        soak.done += 1
        if soak.done % soak.sample_every == 0:
            soak.sample()


async def main(soak: Soak, concurrency: int) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    issued = 0

    def take() -> bool:
        nonlocal issued
        if issued >= soak.cycles:
            return False
        issued += 1
        return True

    soak.sample()
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, echo)
        async with anyio.create_task_group() as clients:
            for i in range(concurrency):
                clients.start_soon(client, soak, port, i, take)
        tg.cancel_scope.cancel()
    await listener.aclose()


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares growth per cycle."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def summary(soak: Soak, engine: str, elapsed: float) -> str:
    warm = [s for s in soak.samples if s[0] >= soak.cycles // 10] or soak.samples
    fds = [s[2] for s in warm]
    rss = [s[3] / 2**20 for s in warm]
    fd_slope = slope([(s[0], s[2]) for s in warm]) * 100_000
    rss_slope = slope([(s[0], s[3]) for s in warm]) * 100_000 / 2**20
    return "\n".join(
        [
            f"engine {engine}: {soak.done:,} cycles in {elapsed:.0f} s "
            f"({soak.done / elapsed:,.0f}/s), {soak.verified_bytes:,} bytes verified, "
            f"{soak.errors} wrong",
            f"descriptors after warm-up: first {fds[0]}, last {fds[-1]}, "
            f"min {min(fds)}, max {max(fds)}, trend {fd_slope:+.2f} per 100k cycles",
            f"RSS after warm-up: first {rss[0]:.1f} MiB, last {rss[-1]:.1f} MiB, "
            f"min {min(rss):.1f}, max {max(rss):.1f}, trend {rss_slope:+.3f} MiB per 100k cycles",
        ]
    )


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="io_uring", choices=("io_uring", "readiness"))
    parser.add_argument("--cycles", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-size", type=int, default=4096)
    parser.add_argument("--sample-every", type=int, default=0, help="default: cycles / 100")
    parser.add_argument("--csv", help="write the samples here")
    args = parser.parse_args()
    soak = Soak(args.cycles, args.sample_every or max(1, args.cycles // 100), args.max_size)
    started = time.monotonic()
    anyio.run(main, soak, args.concurrency, backend="iocp", backend_options={"engine": args.engine})
    elapsed = time.monotonic() - started
    report = summary(soak, args.engine, elapsed)
    soak.sample()  # after the run: everything closed
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["cycles", "seconds", "open_fds", "rss_bytes"])
            writer.writerows(soak.samples)
    print(report)
    _, _, fds, rss = soak.samples[-1]
    print(f"after the run: {fds} descriptors, {rss / 2**20:.1f} MiB")
    return 1 if soak.errors else 0


if __name__ == "__main__":
    sys.exit(run())
