"""anyio-iocp demo: one AnyIO program, run on several backends side by side.

The program below is written once against the plain AnyIO API (no anyio_iocp
imports in the workload).  Each backend gets a fresh ``anyio.run`` in this
process; every run starts its own servers and clients on 127.0.0.1:

* hello: N short connections, ``hello\\n`` -> ``hello back\\n``, the client
  closes first and the server waits for EOF before closing;
* echo:  K connections each streaming M messages of seeded random sizes
  (1 byte .. 64 KiB) that must come back byte for byte, in order;
* bulk:  one connection sending a large payload one way; the server replies with
  the byte count and a BLAKE2b digest that the client checks.

Usage: ``python demo.py [--quick] [--repeat N]
[--backends iocp,iocp-strict,iocp-readiness,trio,asyncio]``.
Exit status is 1 if any check failed (or a run raised), 2 on bad arguments.

Each cell is the median of ``--repeat`` rounds (3, or 1 with ``--quick``);
the rounds are interleaved (each round runs every backend), and the range of
the rounds is printed under the medians.  The last lines compare iocp with
trio phase by phase, and call a difference a tie when the two ranges overlap.
These are demo figures, not a benchmark: see bench/ for that.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskGroup

HOST = "127.0.0.1"
HELLO = b"hello\n"
HELLO_BACK = b"hello back\n"
MAX_MESSAGE = 64 * 1024
PHASE_TIMEOUT = 60.0  # seconds; a hung phase counts as a failed check


@dataclass(frozen=True)
class Sizes:
    hello_exchanges: int
    hello_concurrency: int
    echo_connections: int
    echo_messages: int  # per connection
    bulk_bytes: int
    bulk_write: int


DEFAULT_SIZES = Sizes(2000, 16, 16, 1000, 64 * 1024 * 1024, 64 * 1024)
QUICK_SIZES = Sizes(200, 8, 4, 50, 8 * 1024 * 1024, 64 * 1024)


@dataclass(frozen=True)
class Column:
    key: str  # name on the command line
    backend: str
    options: dict[str, Any]


COLUMNS: dict[str, Column] = {
    c.key: c
    for c in (
        Column("iocp", "iocp", {}),
        Column("iocp-strict", "iocp", {"schedule": "strict"}),
        Column("iocp-readiness", "iocp", {"engine": "readiness"}),
        Column("trio", "trio", {}),
        Column("asyncio", "asyncio", {}),
    )
}


@dataclass
class Result:
    label: str
    hello_per_s: float | None = None
    echo_per_s: float | None = None
    bulk_mb_s: float | None = None
    failures: list[str] = field(default_factory=list)


# -- test data ------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """Seeded random data shared by every backend, built once before any run."""

    pool: bytes  # random bytes that messages and bulk writes are sliced from
    echo_plans: tuple[tuple[tuple[int, int], ...], ...]  # per connection: (offset, size)
    bulk_offsets: tuple[int, ...]
    bulk_digest: str


def make_payload(sizes: Sizes, seed: int) -> Payload:
    rng = random.Random(seed)
    pool = rng.randbytes(2 * MAX_MESSAGE + 1024 * 1024)
    span = len(pool) - MAX_MESSAGE
    plans = []
    for _ in range(sizes.echo_connections):
        plan = []
        for _ in range(sizes.echo_messages):
            # log-uniform sizes: every order of magnitude from 1 B to 64 KiB shows up
            size = min(MAX_MESSAGE, int(2 ** rng.uniform(0, 16)))
            plan.append((rng.randrange(span), size))
        plans.append(tuple(plan))
    writes = -(-sizes.bulk_bytes // sizes.bulk_write)
    offsets = tuple(rng.randrange(span) for _ in range(writes))
    digest = hashlib.blake2b(digest_size=16)
    view = memoryview(pool)
    remaining = sizes.bulk_bytes
    for off in offsets:
        n = min(sizes.bulk_write, remaining)
        digest.update(view[off : off + n])
        remaining -= n
    return Payload(pool, tuple(plans), offsets, digest.hexdigest())


# -- small helpers --------------------------------------------------------------


async def read_until(stream: SocketStream, buf: bytearray, delimiter: bytes) -> bytes | None:
    """Read into ``buf`` until it holds ``delimiter``; return the line, or None at EOF."""
    while True:
        idx = buf.find(delimiter)
        if idx >= 0:
            line = bytes(buf[: idx + len(delimiter)])
            del buf[: idx + len(delimiter)]
            return line
        try:
            buf += await stream.receive()
        except anyio.EndOfStream:
            return None


async def start_server(
    tg: TaskGroup,
    handler: Callable[[SocketStream], Awaitable[None]],
    failures: list[str],
    phase: str,
) -> int:
    """Serve ``handler`` on an ephemeral loopback port in ``tg``; return the port.

    A connection error in one handler is recorded as a failure instead of ending the run.
    """
    listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
    port: int = listener.extra(SocketAttribute.local_port)

    async def guarded(stream: SocketStream) -> None:
        try:
            await handler(stream)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            cause = exc if str(exc) or exc.__cause__ is None else exc.__cause__
            failures.append(f"{phase}: server connection error {type(exc).__name__}: {cause}")

    tg.start_soon(listener.serve, guarded)
    return port


# -- workload 1: hello ------------------------------------------------------------


async def run_hello(sizes: Sizes, failures: list[str]) -> float:
    served = 0  # server side: requests answered whose client then sent EOF
    server_errors: list[str] = []
    client_errors: list[str] = []

    async def handle(stream: SocketStream) -> None:
        nonlocal served
        async with stream:
            buf = bytearray()
            line = await read_until(stream, buf, b"\n")
            if line != HELLO:
                server_errors.append(f"server got {line!r}")
                return
            await stream.send(HELLO_BACK)
            try:  # client closes first: wait for its EOF, then close our side
                extra = await stream.receive()
                server_errors.append(f"server got {extra!r} instead of EOF")
            except anyio.EndOfStream:
                served += 1

    async def exchange(port: int) -> None:
        async with await anyio.connect_tcp(HOST, port) as stream:
            await stream.send(HELLO)
            reply = await read_until(stream, bytearray(), b"\n")
            if reply != HELLO_BACK:
                client_errors.append(f"client got {reply!r}")
        # leaving the block closed the client side first

    todo = sizes.hello_exchanges

    async def worker(port: int) -> None:
        nonlocal todo
        while todo > 0:
            todo -= 1
            await exchange(port)

    async with anyio.create_task_group() as tg:
        port = await start_server(tg, handle, failures, "hello")
        start = time.perf_counter()
        async with anyio.create_task_group() as clients:
            for _ in range(sizes.hello_concurrency):
                clients.start_soon(worker, port)
        elapsed = time.perf_counter() - start
        with anyio.move_on_after(5):  # the last handlers may still be seeing EOF
            while served + len(server_errors) < sizes.hello_exchanges:
                await anyio.sleep(0.001)
        tg.cancel_scope.cancel()

    failures.extend(f"hello: {e}" for e in (client_errors + server_errors)[:5])
    if served != sizes.hello_exchanges:
        failures.append(f"hello: server completed {served}/{sizes.hello_exchanges} exchanges")
    return sizes.hello_exchanges / elapsed


# -- workload 2: echo -------------------------------------------------------------


async def run_echo(sizes: Sizes, payload: Payload, failures: list[str]) -> float:
    pool = memoryview(payload.pool)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            async for chunk in stream:
                await stream.send(chunk)
            await stream.send_eof()

    expected_streams = [
        b"".join(pool[off : off + n] for off, n in plan) for plan in payload.echo_plans
    ]

    async def connection(port: int, index: int, plan: Sequence[tuple[int, int]]) -> None:
        expected = expected_streams[index]
        async with await anyio.connect_tcp(HOST, port) as stream:

            async def writer() -> None:
                for off, n in plan:
                    await stream.send(pool[off : off + n].tobytes())
                await stream.send_eof()

            async with anyio.create_task_group() as tg:
                tg.start_soon(writer)
                got = 0
                async for chunk in stream:
                    # bytes.startswith compares with memcmp; comparing with a
                    # memoryview slice goes byte by byte (about 15 us for 6 KB
                    # here: most of the phase's user-space instructions)
                    if not expected.startswith(chunk, got):
                        failures.append(f"echo: connection {index} differs at byte {got}")
                        tg.cancel_scope.cancel()
                        return
                    got += len(chunk)
            if got != len(expected):
                failures.append(f"echo: connection {index} got {got}/{len(expected)} bytes")

    async with anyio.create_task_group() as tg:
        port = await start_server(tg, handle, failures, "echo")
        start = time.perf_counter()
        async with anyio.create_task_group() as clients:
            for i, plan in enumerate(payload.echo_plans):
                clients.start_soon(connection, port, i, plan)
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    return sum(len(p) for p in payload.echo_plans) / elapsed


# -- workload 3: bulk -------------------------------------------------------------


async def run_bulk(sizes: Sizes, payload: Payload, failures: list[str]) -> float:
    pool = memoryview(payload.pool)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            digest = hashlib.blake2b(digest_size=16)
            count = 0
            async for chunk in stream:
                digest.update(chunk)
                count += len(chunk)
            await stream.send(f"{count} {digest.hexdigest()}\n".encode())

    async with anyio.create_task_group() as tg:
        port = await start_server(tg, handle, failures, "bulk")
        start = time.perf_counter()
        async with await anyio.connect_tcp(HOST, port) as stream:
            remaining = sizes.bulk_bytes
            for off in payload.bulk_offsets:
                n = min(sizes.bulk_write, remaining)
                await stream.send(pool[off : off + n].tobytes())
                remaining -= n
            await stream.send_eof()
            reply = await read_until(stream, bytearray(), b"\n")
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()

    want = f"{sizes.bulk_bytes} {payload.bulk_digest}\n".encode()
    if reply != want:
        failures.append(f"bulk: server replied {reply!r}, expected {want!r}")
    return sizes.bulk_bytes / elapsed / 1e6


# -- one run per backend ------------------------------------------------------------


async def demo_main(
    column: Column, sizes: Sizes, payload: Payload, result: Result, announce: bool
) -> None:
    if column.backend == "iocp":
        import anyio_iocp  # only for reporting: the workload uses plain AnyIO

        info = anyio_iocp.engine_info()  # inside the run: this run's engine
        strict = " strict" if column.options.get("schedule") == "strict" else ""
        result.label = f"iocp ({info.name}{strict})"
        details = " ".join(f"{k}={v}" for k, v in info.details)
        if announce:
            print(f"engine [{column.key}]: {info}" + (f" [{details}]" if details else ""))

    async def timed(name: str, phase: Awaitable[float]) -> float | None:
        with anyio.move_on_after(PHASE_TIMEOUT):
            return await phase
        result.failures.append(f"{name}: timed out after {PHASE_TIMEOUT:.0f}s")
        return None

    result.hello_per_s = await timed("hello", run_hello(sizes, result.failures))
    result.echo_per_s = await timed("echo", run_echo(sizes, payload, result.failures))
    result.bulk_mb_s = await timed("bulk", run_bulk(sizes, payload, result.failures))


def run_column(column: Column, sizes: Sizes, payload: Payload, announce: bool = True) -> Result:
    result = Result(label=column.key)
    try:
        anyio.run(
            demo_main, column, sizes, payload, result, announce,
            backend=column.backend, backend_options=column.options or None,
        )  # fmt: skip
    except Exception as exc:
        leaves: list[BaseException] = [exc]
        while isinstance(leaves[0], BaseExceptionGroup) and leaves[0].exceptions:
            leaves = list(leaves[0].exceptions)
        result.failures.append(f"run raised {type(leaves[0]).__name__}: {leaves[0]}")
    return result


# -- output -------------------------------------------------------------------------


def print_header() -> None:
    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"Python {platform.python_version()} ({platform.python_implementation()})"
        f"  AnyIO {version('anyio')}  Trio {version('trio')}  anyio-iocp {version('anyio-iocp')}"
    )
    print(f"machine: {platform.platform()}  {platform.machine()}  nproc={nproc}")


#: the phases of a column: (name, attribute of Result); higher is better for each
PHASES = (("hello", "hello_per_s"), ("echo", "echo_per_s"), ("bulk", "bulk_mb_s"))
#: rounds a comparison needs before it says ahead or behind
ROUNDS_TO_COMPARE = 3


def phase_values(rounds: Sequence[Result], attribute: str) -> list[float]:
    """The figures of one phase over the rounds (a phase that failed has none)."""
    return [v for v in (getattr(r, attribute) for r in rounds) if v is not None]


def compare(ours: Sequence[float], theirs: Sequence[float]) -> str:
    """The ratio of the medians, and a verdict only when the ranges say so."""
    if not ours or not theirs:
        return "not measured"
    ratio = f"{statistics.median(ours) / statistics.median(theirs):.2f}x"
    if min(len(ours), len(theirs)) < ROUNDS_TO_COMPARE:
        return f"{ratio} (fewer than {ROUNDS_TO_COMPARE} rounds: no verdict)"
    if min(ours) > max(theirs):
        return f"{ratio}, ahead"
    if max(ours) < min(theirs):
        return f"{ratio}, behind"
    return f"{ratio}, a tie (the ranges overlap)"


def print_table(columns: Sequence[Sequence[Result]], sizes: Sizes) -> None:
    """One column per backend: medians over its rounds, their ranges, and
    whether every check of every round passed."""

    def fmt(value: float) -> str:
        return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"

    def median(values: Sequence[float]) -> str:
        return fmt(statistics.median(values)) if values else "-"

    def spread(values: Sequence[float]) -> str:
        return f"{fmt(min(values))}-{fmt(max(values))}" if values else "-"

    names = {
        "hello": f"hello exchanges/s ({sizes.hello_exchanges})",
        "echo": f"echo msgs/s ({sizes.echo_connections}x{sizes.echo_messages})",
        "bulk": f"bulk MB/s ({sizes.bulk_bytes >> 20} MiB)",
    }
    several = any(len(rounds) > 1 for rounds in columns)
    rows: list[tuple[str, list[str]]] = []
    for phase, attribute in PHASES:
        values = [phase_values(rounds, attribute) for rounds in columns]
        rows.append((names[phase], [median(v) for v in values]))
        if several:
            rows.append(("  range", [spread(v) for v in values]))
    rows.append(
        ("verified", ["no" if any(r.failures for r in rounds) else "yes" for rounds in columns])
    )
    labels = [rounds[0].label for rounds in columns]
    first = max(len(name) for name, _ in rows)
    widths = [
        max(len(label), *(len(cells[i]) for _, cells in rows)) for i, label in enumerate(labels)
    ]
    print()
    print(" " * first + "".join(f"  {lb:>{w}}" for lb, w in zip(labels, widths, strict=True)))
    for name, cells in rows:
        print(
            f"{name:<{first}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths, strict=True))
        )


def print_comparisons(keys: Sequence[str], columns: Sequence[Sequence[Result]]) -> None:
    """Each iocp column against trio and asyncio, phase by phase."""
    by_key = dict(zip(keys, columns, strict=True))
    baselines = [k for k in ("trio", "asyncio") if k in by_key]
    if not baselines:
        return
    print()
    for key in keys:
        if COLUMNS[key].backend != "iocp":
            continue
        for base in baselines:
            verdicts = [
                f"{phase} "
                + compare(
                    phase_values(by_key[key], attribute), phase_values(by_key[base], attribute)
                )
                for phase, attribute in PHASES
            ]
            print(f"{key} against {base} (median ratio): " + "; ".join(verdicts))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a CI smoke run")
    parser.add_argument(
        "--backends",
        default=",".join(COLUMNS),
        help=f"comma-separated columns to run, from: {', '.join(COLUMNS)} (default: all)",
    )
    parser.add_argument("--seed", type=int, default=20240601, help="seed for message sizes/data")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="interleaved rounds per backend, at least 1 (default: 3, or 1 with --quick)",
    )
    args = parser.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else 1 if args.quick else ROUNDS_TO_COMPARE
    if repeat < 1:
        parser.error(f"--repeat must be a whole number of rounds, at least 1 (got {repeat})")
    keys = [k.strip() for k in args.backends.split(",") if k.strip()]
    unknown = [k for k in keys if k not in COLUMNS]
    if unknown or not keys:
        parser.error(f"unknown backend column(s) {unknown}; choose from {', '.join(COLUMNS)}")

    sizes = QUICK_SIZES if args.quick else DEFAULT_SIZES
    payload = make_payload(sizes, args.seed)
    print_header()
    # Interleaved rounds: each round runs every backend once, so a change in the
    # machine's load during the demo touches every column alike.
    columns: list[list[Result]] = [[] for _ in keys]
    for round_index in range(repeat):
        for key, rounds in zip(keys, columns, strict=True):
            rounds.append(run_column(COLUMNS[key], sizes, payload, announce=round_index == 0))
    print_table(columns, sizes)
    print_comparisons(keys, columns)
    print(
        "\nnote: single-process demo figures (clients and servers share one thread) on a shared"
        "\nmachine; they show the backends side by side, not their limits. bench/ has the real"
        "\nbenchmark."
    )
    failed = False
    for rounds in columns:
        for round_index, r in enumerate(rounds, 1):
            for failure in r.failures:
                print(f"FAILED [{r.label}, round {round_index}] {failure}")
                failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
