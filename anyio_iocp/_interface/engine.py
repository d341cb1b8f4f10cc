"""The engine interface: what the stream and listener layer asks of an engine.

An *engine* moves bytes between sockets and the program.  Three exist:

* ``io_uring`` (Linux): operations are posted to a submission ring before the
  event happens; the kernel performs them and reports what got done.
* ``iocp`` (Windows): overlapped Winsock calls on Trio's completion port.
* ``readiness``: Trio's ``wait_readable``/``wait_writable`` plus non-blocking
  calls, for every platform where neither completion engine can run.

The layer above (:mod:`anyio_iocp._streams.sockets`) is written once against the three
small abstract classes below, and gives every engine the same AnyIO semantics.
The contract each engine keeps:

* ``StreamIO.receive`` returns at least one byte, or ``b""`` at end of stream,
  and raises :class:`OSError` for socket errors.  When the calling task is
  cancelled, no byte is lost: bytes that arrive later go to the next receive.
* A send sends every byte or raises, in two steps after the caller's cancel
  check: ``StreamIO.send_at_once`` sends what goes without waiting and says
  how much did; ``StreamIO.send_rest`` waits for the rest.  If the task is
  cancelled during ``send_rest``, the send is cancelled in the kernel and its
  completion awaited before Cancelled propagates, so nothing of it can go out
  after a later send.
* ``close`` methods end every operation in flight (cancel, then wait for the
  completion: memory lent to the kernel stays alive until then) and close the
  socket.
* ``ListenerIO.accept`` loses no connection when the caller is cancelled.
  It is a cancel point (checked before a connection is taken), and it yields
  only by waiting: a connection already there is returned with no schedule
  point, which the layer above adds when the run's budget says so, as for a
  stream call that did not wait.
* ``MessageIO`` (datagram sockets, and descriptor passing on UNIX streams)
  receives and sends whole messages with addresses and ancillary data.  A
  cancelled receive either did not happen or returns its message: none is
  dropped in between.  Engines without a completion path for messages use the
  readiness implementation that :meth:`Engine.open_messages` returns.
"""

from __future__ import annotations

import _socket
import errno
import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from anyio_iocp._interface.budget import ScheduleBudget
from anyio_iocp._interface.settings import (
    LISTENER_SETTINGS,
    Tuning,
    Usage,
    check_settings,
)
from anyio_iocp._interface.sockaddr import AncData
from anyio_iocp._interface.stats import EngineCounters, StreamStatistics

if TYPE_CHECKING:
    from anyio_iocp._interface.leftovers import Leftovers


def oserror(res: int, what: str) -> OSError:
    """The OSError for a negative errno result of a completed operation."""
    return OSError(-res, f"{what}: {os.strerror(-res)}")


def _no_memory(what: str, exc: BaseException, made_ahead: OSError) -> OSError:
    """The ENOMEM OSError that breaks a stream because ``exc`` was raised
    for want of memory (``made_ahead`` when even it cannot be made)."""
    try:
        error = OSError(errno.ENOMEM, f"{what} ({exc!r})")
        error.__cause__ = exc
    except MemoryError:
        return made_ahead
    return error


#: made ahead: the errors of bytes lost when even an OSError could not be made
_LOST_BYTES = OSError(errno.ENOMEM, "receive: bytes received could not be kept (no memory)")
_UNSENT_BYTES = OSError(errno.ENOMEM, "send: bytes queued could not be posted (no memory)")


def lost_bytes_error(exc: BaseException) -> OSError:
    """The error that breaks a stream whose received bytes could not be kept
    (copied out of a kernel buffer, or queued) because ``exc`` was raised,
    for want of memory: the stream cannot go on without them."""
    return _no_memory("receive: bytes received could not be kept", exc, _LOST_BYTES)


def unsent_bytes_error(exc: BaseException) -> OSError:
    """The error that breaks a stream whose write-behind bytes could not be
    posted because ``exc`` was raised, for want of memory: bytes cannot be
    skipped on a stream, so nothing goes out after them."""
    return _no_memory("send: bytes queued could not be posted", exc, _UNSENT_BYTES)


#: a socket's address family as a plain int, for checks made once per
#: connection (``socket.socket.family`` makes an ``AddressFamily`` enum of it,
#: which costs more than the rest of the check)
raw_family: Callable[[socket.socket], int] = _socket.socket.family.__get__
AF_UNIX: int | None = getattr(socket, "AF_UNIX", None)
INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def set_nonblocking(sock: socket.socket) -> None:
    """Make ``sock`` non-blocking, unless it is already (a socket made with
    ``SOCK_NONBLOCK``): ``setblocking`` is a system call each time."""
    if sock.gettimeout() != 0.0:
        sock.setblocking(False)


def set_nodelay(sock: socket.socket) -> None:
    """TCP_NODELAY on TCP sockets (a UNIX socket has no such option)."""
    if raw_family(sock) in INET_FAMILIES:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


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
    """Byte transport of one connected stream socket.

    ``receive()`` is a cancel point (a cancel check before any byte moves, or
    a cancellable wait).  A send is two steps, :meth:`send_at_once` and
    :meth:`send_rest`, after a cancel check that the caller (the stream
    layer) makes.  When a receive or a send completes without waiting it
    returns *without* a schedule point: the stream layer adds one when the
    run's :class:`~anyio_iocp._interface.budget.ScheduleBudget` says so.
    """

    sock: socket.socket

    @abstractmethod
    async def receive(self, max_bytes: int) -> bytes:
        """Return 1 to ``max_bytes`` bytes, or ``b""`` at end of stream."""

    @abstractmethod
    def send_at_once(self, data: memoryview) -> int:
        """After the caller's cancel check: send what can go without waiting,
        and return how many bytes of ``data`` did (0 when none could, for
        instance behind sends still pending).  Never waits.  An engine may
        hand the bytes to the kernel instead, and then counts them as sent.
        Raises what a send raises at once (a closed engine, an earlier
        send's error)."""

    @abstractmethod
    async def send_rest(self, data: memoryview) -> None:
        """Send every byte of ``data``, what :meth:`send_at_once` left,
        waiting as needed (cancellable), with no cancel check before it
        starts (the caller made one)."""

    def check_engine(self) -> None:  # noqa: B027 (engines that never close)
        """Raise the engine's error if the run that made this stream has
        ended.  The stream layer calls it before raising a pending
        Cancelled, so that a stream kept past its run says so first, as its
        receives do."""

    @abstractmethod
    async def send_eof(self) -> None:
        """Wait for write-behind sends to go out, then shut down the sending side."""

    @abstractmethod
    async def close(self) -> None:
        """Wait (bounded, cancellable) for write-behind sends, then end the
        operations in flight and close the socket, also when cancelled.  A
        write-behind send error nobody has seen yet is raised here."""

    #: the settings of the live stream (``configure`` changes them)
    sendcap: int
    recvburst: int
    buffersize: int
    #: bytes moved, counted by the stream layer
    bytes_in: int
    bytes_out: int

    @abstractmethod
    def statistics(self) -> StreamStatistics:
        """The stream's counters, as a snapshot."""

    @abstractmethod
    def configure(self, **settings: int) -> None:
        """Change settings of the live stream (validated first, all or nothing)."""

    @abstractmethod
    def usage(self, name: str) -> Usage:
        """``(cap, in use)`` of a setting: sendcap, recvburst or buffersize."""

    async def flush(self) -> None:  # noqa: B027 (engines without write-behind)
        """Wait until write-behind sends have gone out; raise their error."""

    def has_read_ahead(self) -> bool:
        """Bytes received ahead of the reader, or receives posted ahead."""
        return False

    def abandon(self) -> None:
        """End of the run, the stream never closed: close the socket at once
        (the engine has ended every operation already)."""
        self.sock.close()


class ListenerIO(ABC):
    """Accepting side of one listening socket."""

    sock: socket.socket
    #: the listener's own backlog and the defaults of the streams it accepts
    tuning: Tuning
    #: a listener moves no bytes (the run's byte totals add every open object)
    bytes_in = 0
    bytes_out = 0

    @abstractmethod
    def queued(self) -> int:
        """Connections accepted ahead of the application, waiting for accept()."""

    def usage(self, name: str) -> Usage:
        """``(cap, in use)`` of backlog; stream settings report ``(default, 0)``."""
        if name == "backlog":
            return Usage(self.tuning.backlog, self.queued())
        return Usage(getattr(self.tuning, name), 0)

    def abandon(self) -> None:
        """End of the run, the listener never closed: close its socket and the
        connections accepted ahead (the engine has ended every operation)."""
        self.sock.close()

    def configure(self, **settings: int) -> None:
        """Change the backlog or the defaults of streams accepted from now on."""
        checked = check_settings(settings, LISTENER_SETTINGS, "a listener")
        self.tuning = replace(self.tuning, **checked)

    @abstractmethod
    async def accept(self) -> socket.socket:
        """Return the next accepted connection as a socket object.  A cancel
        point; a schedule point only when it waits (the module's contract)."""

    @abstractmethod
    async def close(self) -> None:
        """Stop accepting, end operations in flight and close the socket."""


#: what ``socket.recvmsg`` returns: data, ancillary data, flags, address
Message = tuple[bytes, AncData, int, Any]


class MessageIO(ABC):
    """Whole messages on one socket: datagrams, or descriptors on a UNIX stream."""

    sock: socket.socket

    @abstractmethod
    async def receive_msg(self, bufsize: int, ancbufsize: int) -> Message:
        """One message of at most ``bufsize`` bytes, as ``socket.recvmsg``."""

    @abstractmethod
    async def send_msg(self, data: memoryview, ancdata: AncData, address: Any) -> int:
        """Send one message (to ``address``, or to the peer if None); return
        the bytes sent."""

    @abstractmethod
    async def close(self, close_socket: bool = True) -> None:
        """End the operations in flight; close the socket unless it belongs to
        a stream that closes it itself."""


class Engine(ABC):
    """One engine instance serves one ``anyio.run`` (one Trio run)."""

    info: EngineInfo
    #: the run's statistics counters
    counters: EngineCounters
    #: the run's streams and listeners not closed yet (set by the run, which
    #: closes them when it ends)
    leftovers: Leftovers
    #: when stream calls that did not wait yield; each engine's
    #: ``after_io_wait`` calls its ``new_pass()`` (the run may replace it
    #: before any stream is opened)
    budget: ScheduleBudget
    #: how long to look for completions before the loop sleeps, in seconds,
    #: when its last sleep was that short (0: never); the engines that can
    #: look without a wake-up use it (io_uring), the others ignore it
    spin_seconds: float = 0.0

    def in_flight(self) -> dict[str, int]:
        """Operations handed to the kernel and not completed yet, by kind."""
        return {}

    def posted_by_kind(self) -> dict[str, int]:
        """Operations handed to the kernel so far, by kind."""
        return dict(self.counters.posted)

    def passes(self) -> int:
        """Scheduler passes seen by the engine's hooks."""
        return self.counters.passes

    def completions(self) -> int:
        """Completions reaped so far, every kind."""
        return self.counters.completions

    @abstractmethod
    def open_stream(self, sock: socket.socket, tuning: Tuning) -> StreamIO:
        """Take ownership of a connected stream socket."""

    @abstractmethod
    def open_listener(self, sock: socket.socket, tuning: Tuning) -> ListenerIO:
        """Take ownership of a listening socket."""

    @abstractmethod
    async def connect(self, sock: socket.socket, address: Any) -> None:
        """Connect ``sock`` (not yet connected) to ``address`` (a numeric
        address tuple, or a path for a UNIX socket)."""

    def open_messages(self, sock: socket.socket) -> MessageIO:
        """Take ownership of a datagram socket (or lend a UNIX stream's socket
        for descriptor passing).  The default waits for readiness."""
        from anyio_iocp._interface.readiness import ReadinessMessageIO

        return ReadinessMessageIO(sock)

    def before_io_wait(self, timeout: float) -> float | None:
        """Called once per scheduler pass, before Trio waits for I/O for up to
        ``timeout`` seconds (0: tasks are runnable, the wait will not block).
        An engine that spent some of that time here (io_uring's look before
        a sleep) returns what is left, for the pass hooks to wait for
        instead; None: the whole ``timeout``."""
        return None

    def after_io_wait(self) -> None:  # noqa: B027 (optional hook)
        """Called once per scheduler pass, after Trio's I/O wait."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Called when the run ends, after every task has finished."""
