"""The io_uring engine's listener: the accept pool's primitives on the ring.

The policy (pool of ``backlog`` posted accepts, queue, back-off when
descriptors run out, close) is :class:`anyio_iocp._flow.accept_pool.PostedAcceptPool`.
This module posts the accepts and reads their completions.  Each accept is a
single-shot ``IORING_OP_ACCEPT``: a multishot accept takes every pending
connection as soon as it is armed, so it could not keep the pool's bound.
Its completion is the new connection's descriptor, or a negative errno:
EMFILE, ENFILE, ENOBUFS and ENOMEM mean a shortage (a pause), ECANCELED an
accept withdrawn or drained, EAGAIN an accept whose connection another took,
anything else an error of the listener.

The listening socket is non-blocking for the pool's direct ``accept4``
(``_accept_now``), as AnyIO's own listeners already are.  A posted accept
that finds no connection arms a poll; one the kernel hands to a worker
thread runs with the socket's flags and may end with EAGAIN, which the pool
takes as "post again", not as an error.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

from anyio_iocp._engines.io_uring._uring import lib
from anyio_iocp._engines.io_uring.op import UringOp
from anyio_iocp._flow.accept_backoff import EXHAUSTION
from anyio_iocp._flow.accept_pool import PostedAcceptPool
from anyio_iocp._interface.engine import oserror
from anyio_iocp._interface.settings import Tuning

if TYPE_CHECKING:
    from anyio_iocp._engines.io_uring.engine import UringEngine

#: the type of an accepted socket: the ring's accept and the direct one both
#: make it non-blocking (SOCK_NONBLOCK), so no setblocking call follows
_SOCK_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_NOT_ERRORS = (-errno.ECANCELED, -errno.EAGAIN)


class AcceptOp(UringOp):
    """One posted accept of a listener's pool: one connection, or an error."""

    __slots__ = ("listener",)

    def __init__(self, user_data: int, listener: UringListenerIO) -> None:
        super().__init__(user_data, None)
        self.listener = listener

    def complete(self, res: int, flags: int) -> None:
        self.result = res
        self.done = True
        listener = self.listener
        if res >= 0:
            listener.accepted(self, socket.socket(listener.family, _SOCK_STREAM, 0, fileno=res))
        elif -res in EXHAUSTION:
            listener.exhausted(self, -res)
        else:
            # ECANCELED: withdrawn or drained.  EAGAIN: the connection that
            # woke it was taken by another accept (the pool's accept4, or a
            # kernel that retries a non-blocking socket's accept once): no
            # error of the listener, the pool posts again.
            no_error = res in _NOT_ERRORS
            listener.accept_failed(self, None if no_error else oserror(res, "accept"))
        self.wake()


class UringListenerIO(PostedAcceptPool[AcceptOp]):
    """A pool of ``backlog`` posted accepts on the ring, iocpsock's ``-backlog``."""

    def __init__(self, engine: UringEngine, sock: socket.socket, tuning: Tuning) -> None:
        sock.setblocking(False)  # for the direct accept (module docstring)
        self.fd = sock.fileno()
        self._engine = engine
        super().__init__(sock, tuning, engine.counters)

    def _post_accept(self) -> AcceptOp:
        engine = self._engine
        op = AcceptOp(engine.new_id(), self)
        engine.post_registered(op, lib.iou_prep_accept, self.fd, 0)
        return op

    def _accept_now(self) -> socket.socket | None:
        fd = lib.iou_accept_now(self.fd)
        if fd >= 0:
            return socket.socket(self.family, _SOCK_STREAM, 0, fileno=fd)
        if -fd in EXHAUSTION:
            # a shortage: the pool pauses (a posted accept may never wake)
            raise oserror(fd, "accept")
        # none waiting (EAGAIN), or an error a posted accept reports through
        # the pool's policy (a reset connection, a socket shut down)
        return None

    def _withdraw(self, op: AcceptOp) -> None:
        self._engine.request_cancel(op)

    def let_go(self) -> None:
        super().let_go()
        # The accepts and their cancels reach the kernel now, while the
        # descriptor still names this socket: the caller closes it next, and
        # a number reused before the pass's submission would take them.
        self._engine.submit_now()

    async def _drain(self, ops: list[AcceptOp]) -> None:
        await self._engine.drain(ops)

    def _forget(self) -> None:
        self._engine.forget_listener(self)
