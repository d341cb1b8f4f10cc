"""Directly accepted sockets that are non-blocking already, by inheritance.

Winsock's ``accept()`` gives the new socket the listening socket's
properties, its non-blocking mode among them (which is why CPython's
``socket.accept()`` makes the new socket blocking again when the listener
has a timeout).  CPython's ``socket(fileno=...)`` cannot know that: the object
it makes says "blocking" (``gettimeout()`` is None), so a stream's
``setblocking(False)`` would make one more ``ioctlsocket(FIONBIO)`` for each
connection, which changes nothing.  Under Wine that call is two requests to
the wineserver (the ioctl and its wait), of the 18 to 20 a short
connection costs (``bench/wine_requests.py``).

Detected, not assumed: :func:`inherits_nonblocking` accepts one loopback
connection from a non-blocking listener, once per process, and tries a
``recv`` on it with a 100 ms receive timeout: an inherited non-blocking mode
fails at once with ``WSAEWOULDBLOCK``, a blocking socket waits for the
timeout.  Only where the probe saw the inheritance does the listener wrap
accepted descriptors in :class:`InheritedNonblocking`, whose
``gettimeout()`` tells the truth (0.0) until the socket's mode is set again.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

from anyio_iocp._internals.cpython_socket import accept_descriptor

#: the probe's receive timeout, 100 ms, as Winsock's SO_RCVTIMEO takes it (a
#: DWORD of milliseconds) and as POSIX's does (a struct timeval; the tests
#: run the probe's parts on Linux too)
PROBE_TIMEOUT_S = 0.1
PROBE_TIMEOUT = struct.pack("I", 100) if sys.platform == "win32" else struct.pack("ll", 0, 100_000)


class InheritedNonblocking(socket.socket):
    """A socket whose descriptor is non-blocking from its accept (module
    docstring): Python's own record of the mode says blocking until
    ``setblocking()`` or ``settimeout()`` is called through this class, so
    ``gettimeout()``, ``getblocking()`` and ``timeout`` answer as for a
    non-blocking socket until then.  The calls a connected stream makes
    (``recv``, ``send`` and their variants) behave the same for a timeout of
    None and of 0.0 on a non-blocking descriptor: each is tried once and
    raises ``BlockingIOError`` when it would wait."""

    __slots__ = ("_inherited",)

    def __init__(self, family: int, type: int, proto: int, fileno: int) -> None:
        super().__init__(family, type, proto, fileno)
        #: the descriptor's mode is the inherited one (no call set it since)
        self._inherited = True

    def gettimeout(self) -> float | None:
        timeout = super().gettimeout()
        if timeout is None and self._inherited:
            return 0.0
        return timeout

    def getblocking(self) -> bool:
        return self.gettimeout() != 0.0

    @property
    def timeout(self) -> float | None:
        return self.gettimeout()

    def setblocking(self, flag: bool) -> None:
        super().setblocking(flag)
        self._inherited = False

    def settimeout(self, value: float | None) -> None:
        super().settimeout(value)
        self._inherited = False


#: the probe's answer, once it ran (inherits_nonblocking)
_probed: bool | None = None


def inherits_nonblocking() -> bool:
    """Whether a socket accepted from a non-blocking listener is non-blocking
    itself, here (module docstring); False when the probe cannot run.  Not
    while ``socket.setdefaulttimeout()`` is in force: Python then sets every
    new socket object's mode itself (the probe would see its own doing, or
    wait out the default timeout), and the accepted sockets' objects record
    that mode truly anyway.  The answer is kept only from a probe that
    reached its receive (one that failed before, short of descriptors for
    example, runs again at the next listener).  It runs on the event loop,
    when a listener is made: a few milliseconds, 100 ms where the mode is
    not inherited."""
    global _probed
    if _probed is None:
        if socket.getdefaulttimeout() is not None:
            return False
        answer = _probe()
        if answer is None:
            return False
        _probed = answer
    return _probed


def _probe() -> bool | None:
    try:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            with socket.create_connection(listener.getsockname(), timeout=1.0):
                # a timeout makes the descriptor non-blocking; CPython's own
                # accept() would set the new socket blocking again
                listener.settimeout(1.0)
                fd, _address = accept_descriptor(listener)
                with socket.socket(listener.family, listener.type, listener.proto, fd) as conn:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, PROBE_TIMEOUT)
                    return _recv_fails_at_once(conn)
    except OSError:
        return None  # the probe could not run


def _recv_fails_at_once(conn: socket.socket) -> bool:
    """A receive with nothing to read, on ``conn`` with its receive timeout
    set to PROBE_TIMEOUT: True if it failed at once (the
    descriptor is non-blocking), False if it waited for the timeout.  Told by
    the time taken: a timed-out receive raises ``WSAETIMEDOUT`` on Windows
    but ``EAGAIN`` on Linux, as a non-blocking one does.  A failure slower
    than half the timeout counts as a wait: at worst the stream then makes
    the call it would have made anyway."""
    start = time.perf_counter()
    try:
        conn.recv(1)
    except BlockingIOError:
        return time.perf_counter() - start < PROBE_TIMEOUT_S / 2
    except OSError:
        return False  # timed out (WSAETIMEDOUT): a blocking descriptor
    return False  # (bytes or end of stream: the peer sends nothing; not expected)
