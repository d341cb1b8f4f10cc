"""CPU of a listener starved of descriptors during an accept storm.

    .venv/bin/python bench/accept_starvation.py --engine io_uring --seconds 5

A server process (this file, ``--serve``) lowers its RLIMIT_NOFILE, starts an
iocp listener, serves ``accept()`` in a loop, and fills every free descriptor
slot.  This process then opens ``--clients`` connections to it, which the
kernel completes but the server cannot accept (EMFILE), and samples the
server's CPU time for ``--seconds``.  Then the server frees its descriptors,
and this process checks that every connection gets accepted.  A listener that
retried at once would use a whole CPU while starved; one that backs off uses
almost none.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import socket
import subprocess
import sys
import time

from procstat import cpu_seconds


def serve(engine: str, clients: int) -> None:
    import anyio
    from anyio.abc import SocketAttribute

    import anyio_iocp

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    # room for every client once the fillers are gone
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + clients + 64, hard))

    async def main() -> None:
        multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=64)
        listener = multi.listeners[0]
        print(listener.extra(SocketAttribute.local_port), flush=True)
        accepted = []

        async def accept_forever() -> None:
            while True:
                accepted.append(await listener.accept())

        async with anyio.create_task_group() as tg:
            tg.start_soon(accept_forever)
            await anyio.sleep(0.1)
            fillers: list[int] = []
            with contextlib.suppress(OSError):
                while True:
                    fillers.append(os.open(os.devnull, os.O_RDONLY))
            print(f"filled {len(fillers)}", flush=True)
            await anyio.to_thread.run_sync(sys.stdin.readline)  # "free"
            for fd in fillers:
                os.close(fd)
            with anyio.fail_after(30):
                while len(accepted) < clients:
                    await anyio.sleep(0.01)
            print(f"accepted {len(accepted)}", flush=True)
            tg.cancel_scope.cancel()

    anyio.run(main, backend="iocp", backend_options={"engine": engine})


def measure(engine: str, clients: int, seconds: float) -> None:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--engine", engine, "--clients", str(clients)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    port = int(server.stdout.readline())
    print(server.stdout.readline().strip(), "descriptor slots", file=sys.stderr)
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(clients)]
    time.sleep(0.2)  # the storm has hit the full table by now
    cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
    time.sleep(seconds)
    cpu, wall = cpu_seconds(server.pid) - cpu0, time.monotonic() - wall0
    server.stdin.write("free\n")
    server.stdin.flush()
    result = server.stdout.readline().strip()
    server.wait(timeout=30)
    for sock in socks:
        sock.close()
    print(
        f"engine {engine}: {clients} connections pending, server CPU while starved "
        f"{cpu:.2f} s over {wall:.1f} s ({100 * cpu / wall:.1f}% of one CPU); "
        f"after descriptors were freed: {result}"
    )


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine", default="io_uring", choices=("io_uring", "readiness"))
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.engine, args.clients)
    else:
        measure(args.engine, args.clients, args.seconds)


if __name__ == "__main__":
    run()
