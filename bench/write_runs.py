"""A writer and its reader in one process: how many writes go by before the
reader runs, and the rate that follows from it.

The writer sends 64 KiB writes as fast as its stream takes them; the reader,
another task of the same run on the other end of a loopback connection,
receives until the end of stream.  Nothing else is done with the bytes (the
demo's bulk phase also hashes them), so the figure is the transfer's own.
Per column (the demo's, see ``demo.py``), the median rate of interleaved
rounds with its range, the writes in a row between two turns of the reader
(median and longest, counted in the last round), and the reader's receives.

    .venv/bin/python bench/write_runs.py --backends iocp,iocp-readiness,trio --rounds 5

A long run of writes is a writer that filled the socket buffer before its
reader ran (``docs/performance.md``, "A stream yields after sending 128 KiB").
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.abc import SocketAttribute, SocketStream

sys.path.append(str(Path(__file__).resolve().parent.parent))

from demo_phase import add_column_options, chosen_columns

import demo

WRITE = 64 * 1024


@dataclass
class Transfer:
    mb_per_s: float
    #: "w" for each write, "r" for each receive, in the order they returned
    events: list[str]

    def writes_in_a_row(self) -> list[int]:
        return [len(list(run)) for kind, run in itertools.groupby(self.events) if kind == "w"]


def transfer(column: demo.Column, total: int) -> Transfer:
    events: list[str] = []
    chunk = bytes(range(256)) * (WRITE // 256)

    async def main() -> float:
        received = 0

        async def read(stream: SocketStream) -> None:
            nonlocal received
            async with stream:
                async for data in stream:
                    received += len(data)
                    events.append("r")

        async with anyio.create_task_group() as tg:
            listener = await anyio.create_tcp_listener(local_host=demo.HOST)
            tg.start_soon(listener.serve, read)
            port = listener.extra(SocketAttribute.local_port)
            start = time.perf_counter()
            async with await anyio.connect_tcp(demo.HOST, port) as stream:
                for _ in range(total // WRITE):
                    await stream.send(chunk)
                    events.append("w")
                await stream.send_eof()
                while received < total:
                    await anyio.sleep(0)
            elapsed = time.perf_counter() - start
            tg.cancel_scope.cancel()
        return total / elapsed / 1e6

    rate = anyio.run(main, backend=column.backend, backend_options=column.options or None)
    return Transfer(rate, events)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_column_options(parser)
    parser.add_argument("--mib", type=int, default=64, help="MiB per transfer (default 64)")
    args = parser.parse_args(argv)
    keys = chosen_columns(parser, args)
    if args.mib < 1:
        parser.error(f"--mib {args.mib}: expected at least 1")
    runs: dict[str, list[Transfer]] = {k: [] for k in keys}
    for _ in range(args.rounds):
        for key in keys:
            runs[key].append(transfer(demo.COLUMNS[key], args.mib << 20))
    print(f"{args.mib} MiB in {WRITE >> 10} KiB writes, {args.rounds} interleaved rounds")
    for key, transfers in runs.items():
        rates = [t.mb_per_s for t in transfers]
        rows = transfers[-1].writes_in_a_row()
        print(
            f"  {key:15} median {statistics.median(rates):>7,.0f} MB/s"
            f"  range {min(rates):,.0f}-{max(rates):,.0f}"
            f"  writes in a row: median {statistics.median(rows):g}, longest {max(rows)}"
            f"  receives {transfers[-1].events.count('r')}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
