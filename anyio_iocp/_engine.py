"""The engine interface: what the stream and listener layer asks of an engine.

An *engine* moves bytes between sockets and the program.  Three exist:

* ``io_uring`` (Linux): operations are posted to a submission ring before the
  event happens; the kernel performs them and reports what got done.
* ``iocp`` (Windows, planned): overlapped Winsock calls and Trio's completion port.
* ``readiness``: Trio's ``wait_readable``/``wait_writable`` plus non-blocking
  calls, for every platform where neither completion engine can run.

The layer above (:mod:`anyio_iocp._streams`) is written once against the three
small abstract classes below, and gives every engine the same AnyIO semantics.
The contract each engine keeps:

* ``StreamIO.receive`` returns at least one byte, or ``b""`` at end of stream,
  and raises :class:`OSError` for socket errors.  When the calling task is
  cancelled, no byte is lost: bytes that arrive later go to the next receive.
* ``StreamIO.send`` sends every byte or raises.  If the task is cancelled, the
  send is cancelled in the kernel and its completion awaited before Cancelled
  propagates, so nothing of it can go out after a later send.
* ``close`` methods end every operation in flight (cancel, then wait for the
  completion: memory lent to the kernel stays alive until then) and close the
  socket.
* ``ListenerIO.accept`` loses no connection when the caller is cancelled.
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

#: Size of each receive buffer the engines post (AnyIO's default receive size).
DEFAULT_BUFFER_SIZE = 65536


@dataclass(frozen=True)
class EngineInfo:
    """Which engine runs, and why that one."""

    #: ``"io_uring"``, ``"iocp"`` or ``"readiness"``
    name: str
    #: how it was chosen: ``"auto"`` or ``"forced"`` (``backend_options={"engine": ...}``)
    selected_by: str
    #: why this engine (for ``readiness`` chosen automatically: why io_uring could not run)
    reason: str
    #: kernel details where they apply (features, probed opcodes)
    details: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        return f"{self.name} ({self.selected_by}: {self.reason})"


class StreamIO(ABC):
    """Byte transport of one connected stream socket."""

    sock: socket.socket

    @abstractmethod
    async def receive(self, max_bytes: int) -> bytes:
        """Return 1 to ``max_bytes`` bytes, or ``b""`` at end of stream."""

    @abstractmethod
    async def send(self, data: memoryview) -> None:
        """Send every byte of ``data``."""

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    @abstractmethod
    async def close(self) -> None:
        """End operations in flight and close the socket; never raises Cancelled."""


class ListenerIO(ABC):
    """Accepting side of one listening socket."""

    sock: socket.socket

    @abstractmethod
    async def accept(self) -> socket.socket:
        """Return the next accepted connection as a socket object."""

    @abstractmethod
    async def close(self) -> None:
        """Stop accepting, end operations in flight and close the socket."""


class Engine(ABC):
    """One engine instance serves one ``anyio.run`` (one Trio run)."""

    info: EngineInfo

    @abstractmethod
    def open_stream(self, sock: socket.socket) -> StreamIO:
        """Take ownership of a connected stream socket."""

    @abstractmethod
    def open_listener(self, sock: socket.socket) -> ListenerIO:
        """Take ownership of a listening socket."""

    @abstractmethod
    async def connect(self, sock: socket.socket, address: tuple[Any, ...]) -> None:
        """Connect ``sock`` (not yet connected) to ``address``."""

    def before_io_wait(self) -> None:  # noqa: B027 (optional hook)
        """Called once per scheduler pass, before Trio waits for I/O."""

    def after_io_wait(self) -> None:  # noqa: B027 (optional hook)
        """Called once per scheduler pass, after Trio's I/O wait."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Called when the run ends, after every task has finished."""
