"""The scenario of tests/test_exhaustion.py::test_accept_storm_system_out_of_descriptors,
run in its own interpreter (``python tests/enfile_script.py ENGINE``) because
the readiness engine's fault is a seccomp filter, which cannot be removed.

How accept is made to fail with ENFILE (the system-wide descriptor limit,
which cannot be reached safely on a shared machine):

* readiness: the listener's ``accept4`` system call.  A seccomp filter hands
  every ``accept``/``accept4`` of the thread running the loop to a supervisor
  thread (``SECCOMP_RET_USER_NOTIF``), which answers ENFILE while the fault is
  on: the real system call returns -ENFILE to CPython, which raises
  ``OSError(ENFILE)`` to the engine.  With the fault off the call runs.
* io_uring: ``IORING_OP_ACCEPT`` runs inside the kernel, not through the
  system call table, so no seccomp filter sees it.  While the fault is on, each
  accept the listener posts goes through the ring as a no-op of the same
  ``AcceptOp``, whose completion reaches the listener as -ENFILE: the engine
  boundary (a completion read by ``AcceptOp.complete``) sees exactly what
  a failing accept produces.  Like a real ENFILE, it fails before any
  connection is taken from the listen queue (the kernel allocates the file
  before it dequeues a connection).

Prints ``refused N``, ``failures N``, ``accepted N`` and every record of the
``anyio_iocp`` logger as ``LEVEL message``.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream
from helpers import first_listener, recv_exactly
from seccomp_deny import AcceptNotifier

import anyio_iocp
from anyio_iocp._face.runstate import current_engine

CLIENTS = 20
STARVED_SECONDS = 1.0


class RingAcceptFault:
    """The io_uring engine's accepts, each completed as -ENFILE while on."""

    def __init__(self) -> None:
        self.errno = 0
        self.refused = 0

    def install(self) -> None:
        from anyio_iocp._engines.io_uring._uring import lib

        from anyio_iocp._engines.io_uring.listener import AcceptOp, UringListenerIO

        fault = self

        class FailingAcceptOp(AcceptOp):
            __slots__ = ("code",)
            code: int

            def complete(self, res: int, flags: int) -> None:
                # the no-op completed (res 0): report the fault's errno
                super().complete(-self.code if res == 0 else res, flags)

        engine: Any = current_engine()
        real_post_accept = UringListenerIO._post_accept

        def post_accept(listener: UringListenerIO) -> AcceptOp:
            if not fault.errno:
                return real_post_accept(listener)
            op = FailingAcceptOp(engine.new_id(), listener)
            op.code = fault.errno
            engine.post_registered(op, lib.iou_prep_nop)
            fault.refused += 1
            return op

        UringListenerIO._post_accept = post_accept  # type: ignore[method-assign,assignment]


async def storm(fault: Any) -> None:
    if isinstance(fault, RingAcceptFault):
        fault.install()
    fault.errno = errno.ENFILE  # before the listener posts its accept pool
    multi = await anyio_iocp.create_tcp_listener(local_host="127.0.0.1", backlog=8)
    listener = first_listener(multi)
    backoff: Any = listener._io._backoff  # type: ignore[attr-defined]
    port = listener.extra(SocketAttribute.local_port)
    accepted: list[SocketStream] = []

    async def serve() -> None:
        while True:
            accepted.append(await listener.accept())

    clients = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        for _ in range(CLIENTS):  # the kernel completes these handshakes
            clients.append(socket.create_connection(("127.0.0.1", port)))
        await anyio.sleep(STARVED_SECONDS)
        print(f"failures {backoff.failures}", flush=True)
        print(f"accepted while refused {len(accepted)}", flush=True)
        fault.errno = 0  # the system has descriptors again
        with anyio.fail_after(10):
            while len(accepted) < CLIENTS:
                await anyio.sleep(0.01)
        print(f"starving after {backoff.starving}", flush=True)
        by_port = {s.extra(SocketAttribute.remote_port): s for s in accepted}
        for i, client in enumerate(clients):
            client.sendall(b"client %03d" % i)
            stream = by_port[client.getsockname()[1]]
            assert await recv_exactly(stream, 10) == b"client %03d" % i
        print(f"accepted {len(accepted)}", flush=True)
        print(f"total failures {backoff.total_failures}", flush=True)
        tg.cancel_scope.cancel()
    for stream in accepted:
        await stream.aclose()
    for client in clients:
        client.close()
    await multi.aclose()


class Printer(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        print(f"{record.levelname} {record.getMessage()}", flush=True)


def main() -> None:
    engine = sys.argv[1]
    logger = logging.getLogger("anyio_iocp")
    logger.setLevel(logging.INFO)
    logger.addHandler(Printer())
    fault: Any = RingAcceptFault() if engine == "io_uring" else AcceptNotifier()
    if isinstance(fault, AcceptNotifier):
        fault.install()  # this thread runs the loop
    anyio.run(storm, fault, backend="iocp", backend_options={"engine": engine})
    print(f"refused {fault.refused}", flush=True)


if __name__ == "__main__":
    main()
