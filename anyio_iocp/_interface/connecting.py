"""Connecting a stream socket: try at once, and wait only for a handshake
still under way.  Written once for every engine.

Why not post the connect
------------------------
A non-blocking ``connect()`` to a TCP peer says ``EINPROGRESS`` even when the
handshake has finished inside the call.  On loopback it always has: the SYN,
the SYN-ACK and the ACK travel through the loopback device while
``connect()`` runs (50 of 50 connects were writable at once, 2026-12-04;
under Wine, 100 of 100 were established when ``connect()`` returned).
A connect posted to a ring or waited for with epoll then costs a wait whose
event has already happened: the task parks, the engine reaps the completion
or the readiness event, and the task is woken in a later pass.  So
:func:`connect_stream` calls ``connect()`` itself, asks ``getpeername()``
whether the connection is established (it fails with ``ENOTCONN`` while the
SYN is unanswered, and after a refusal), and returns at once when it is.

What the outcomes mean
----------------------
* ``connect()`` succeeds (a UNIX socket), or the connection is established
  already: connected, without waiting.  The call is still a cancel point
  (checked first) and yields when the run's budget says so, as a stream
  call that did not wait does (:mod:`anyio_iocp._interface.budget`); so does
  a connect that fails at once (strict mode: every call yields, as in Trio).
* Not established, and ``SO_ERROR`` holds an error: the peer refused (on
  loopback the RST has come back already); that error is raised at once.
* Not established and no error: the handshake is under way (a remote peer,
  or a listener whose queue is full, so its SYN was dropped).  The engine's
  ``wait_writable`` waits for its end (io_uring: a poll posted to the ring;
  readiness and IOCP: Trio's ``wait_writable``, an AFD poll on Windows), then
  ``SO_ERROR`` says how it ended.
  A cancelled wait abandons the attempt; the caller closes the socket.
* ``EAGAIN`` (a UNIX listener's backlog is full): nothing started, and no
  event announces room, so the connect is tried again after
  ``CONNECT_RETRY_SECONDS``.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from anyio_iocp._interface.budget import ScheduleBudget
from anyio_iocp._interface.engine import set_nonblocking
from anyio_iocp._interface.stats import EngineCounters
from anyio_iocp._interface.yielding import schedule_point_on_budget

#: how long a connect refused with EAGAIN (a full UNIX backlog) waits before
#: trying again
CONNECT_RETRY_SECONDS = 0.005


def connect_error(err: int, address: Any) -> OSError:
    """The error of a failed connect, from its ``SO_ERROR`` code.  On Windows
    the code is a Winsock one (``WSAECONNREFUSED``): it is given as
    ``winerror``, as Python's own socket errors are, and described by the
    system (``os.strerror`` knows only C runtime codes there)."""
    if sys.platform == "win32":
        import ctypes

        described = ctypes.FormatError(err).strip()
        return OSError(None, f"connect to {address!r}: {described}", None, err)
    return OSError(err, f"connect to {address!r}: {os.strerror(err)}")


def raise_if_failed(sock: socket.socket, address: Any) -> None:
    """Raise the error a connect ended with (``SO_ERROR``), if any.  (Raised
    where it is made, never kept in a variable: a frame of the traceback that
    held it would make a reference cycle, which AnyIO's
    ``test_happy_eyeballs_refcycles`` checks for.)"""
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        # (from None: it is raised while the EINPROGRESS is being handled)
        raise connect_error(err, address) from None


def established(sock: socket.socket, address: Any) -> bool:
    """After ``EINPROGRESS``: True if the handshake has finished already,
    False if it is under way; raise the error it failed with."""
    try:
        sock.getpeername()
    except OSError:  # ENOTCONN: no answer yet, or refused
        pass
    else:
        return True
    raise_if_failed(sock, address)
    return False


async def connect_stream(
    sock: socket.socket,
    address: Any,
    budget: ScheduleBudget,
    counters: EngineCounters,
    wait_writable: Callable[[socket.socket], Awaitable[None]],
) -> None:
    """Connect ``sock`` (made non-blocking here) to ``address``, waiting for a
    handshake under way with ``wait_writable``; every call counts as a direct
    connect in ``counters``."""
    set_nonblocking(sock)
    counters.direct_connect += 1
    await trio.lowlevel.checkpoint_if_cancelled()
    passes = budget.passes  # a change means it waited (and so yielded) meanwhile
    try:
        await _attempt(sock, address, wait_writable)
    except OSError:
        # A connect that fails at once is a schedule point too, as in Trio:
        # otherwise a loop of refused connects would never let another task
        # or a deadline in (strict mode: every time; else on the budget).
        await schedule_point_on_budget(budget, passes)
        raise
    # connected without waiting, and the budget has run out: a schedule point
    await schedule_point_on_budget(budget, passes)


async def _attempt(
    sock: socket.socket,
    address: Any,
    wait_writable: Callable[[socket.socket], Awaitable[None]],
) -> None:
    while True:
        try:
            sock.connect(address)
        except BlockingIOError as exc:
            if exc.errno == errno.EAGAIN:
                await trio.sleep(CONNECT_RETRY_SECONDS)
                continue
            if not established(sock, address):
                await wait_writable(sock)
                raise_if_failed(sock, address)
        return
