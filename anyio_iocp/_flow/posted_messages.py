"""What the completion engines' message paths share: one operation posted per
call, waited for with the engine's ``wait_or_cancel``, and drained on close.

Both io_uring (:mod:`anyio_iocp._engines.io_uring.messages`) and IOCP
(:mod:`anyio_iocp._engines.iocp.messages`) post a receive or a send only when the
direct non-blocking call would block.  A cancelled task cancels its operation
in the kernel and waits for the completion: if the operation happened anyway
its result is returned (the cancellation is delivered at the next checkpoint),
so no datagram is lost.  ``close()`` cancels every operation still in flight,
waits for all their completions (the memory lent to the kernel stays alive
until then), and only then closes the socket.  How a completion reports its
result differs per engine; subclasses turn it into a byte count or an error.

An operation is listed in flight *before* the engine hands it to the kernel
(:meth:`PostedMessageIO._post_listed`): listed after, a failure or a Ctrl+C
between the two would leave an operation that ``close()`` neither cancels
nor waits for.  On io_uring such a receive keeps its socket open after
``close()`` (a posted operation holds the file), so the port stays bound and
a datagram sent to it is taken by nobody.
"""

from __future__ import annotations

import errno
import socket
from abc import abstractmethod
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import trio
from trio.lowlevel import enable_ki_protection

from anyio_iocp._interface.engine import MessageIO


class PostedOp(Protocol):
    done: bool


class CompletionEngine(Protocol):
    async def wait_or_cancel(self, op: Any) -> None: ...

    async def drain(self, ops: list[Any]) -> None: ...

    def holds(self, op: Any) -> bool: ...


OpT = TypeVar("OpT", bound=PostedOp)


class PostedMessageIO(MessageIO):
    def __init__(self, engine: CompletionEngine, sock: socket.socket) -> None:
        sock.setblocking(False)  # for the direct calls; posted operations ignore it
        self.sock = sock
        self._completions = engine
        self._in_flight: set[PostedOp] = set()
        self._closing = False

    def _check_open(self) -> None:
        if self._closing:
            raise self._closed_error()

    @abstractmethod
    def _outcome(self, op: Any, what: str) -> int:
        """The byte count of a completed ``op``, or raise its error (a
        kernel-side cancellation while closing: raise :meth:`_closed_error`)."""

    @staticmethod
    def _closed_error() -> OSError:
        return OSError(errno.EBADF, "socket closed")

    @enable_ki_protection  # (Ctrl+C waits: posted and listed, or neither)
    def _post_listed(self, op: OpT, start: Callable[..., None], *args: Any) -> OpT:
        """List ``op`` in flight, then post it with ``start(op, *args)``.

        A ``start`` that fails takes back what it did, and the listing goes
        too, unless the engine still holds ``op`` (what failed came after
        the kernel had it: ``close()`` must then find it)."""
        in_flight = self._in_flight
        try:
            in_flight.add(op)
            start(op, *args)
        except BaseException:
            if not self._completions.holds(op):
                in_flight.discard(op)
                self._not_posted(op)
            raise
        return op

    def _not_posted(self, op: Any) -> None:
        """``op`` never reached the kernel: let go of what it lent (io_uring:
        its views of the caller's memory).  The default: nothing to do."""

    async def _run(self, op: PostedOp, what: str) -> int:
        """Wait for ``op``, posted by :meth:`_post_listed` (cancelled in the
        kernel if the task is); its outcome."""
        try:
            await self._completions.wait_or_cancel(op)
        finally:
            self._in_flight.discard(op)
        return self._outcome(op, what)

    def _release(self) -> None:
        """Close the socket (engines that track sockets forget it first)."""
        self.sock.close()

    async def close(self, close_socket: bool = True) -> None:
        self._closing = True
        pending = [op for op in self._in_flight if not op.done]
        if pending:
            with trio.CancelScope(shield=True):
                await self._completions.drain(pending)
        if close_socket:
            self._release()
