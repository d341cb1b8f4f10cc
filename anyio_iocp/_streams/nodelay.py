"""TCP_NODELAY on accepted connections, set once on the listener where the
kernel passes it on.

AnyIO turns Nagle's algorithm off on every TCP stream, accepted ones
included: one ``setsockopt`` per connection.  Linux copies the listening
socket's TCP_NODELAY to a connection when its handshake completes (Wine does
too, for ``accept()`` and ``AcceptEx``), so a listener that has the option
hands out connections that have it, and the call per connection is a system
call for nothing (one in nine of the server's system calls on the churn
benchmark: connect, one exchange, close).

Whether the kernel does so is checked, not taken for granted: the listener's
socket gets the option before the engine may accept anything, and accepted
connections are asked (``getsockopt``).  The first one that has it settles
it: the listener's later connections are trusted to have it too (on IOCP, an
answer from an ``AcceptEx`` connection also stands for the direct ``accept``
path).  One that lacks it gets its own ``setsockopt``; after ``PROBES`` such
connections (a kernel that does not pass the option on, or a socket wrapped
as a listener with connections already queued, whose handshakes came before
the option) every connection gets its own, as before.  A program that clears
TCP_NODELAY on the listener's raw socket after that would get connections
without it.  The listener's own socket keeps the option (also a socket the
program handed over with ``SocketListener.from_socket``).
"""

from __future__ import annotations

import socket

from anyio_iocp._interface.engine import INET_FAMILIES, raw_family, set_nodelay

#: connections without the option after which the listener stops asking
PROBES = 4


class AcceptedNodelay:
    """TCP_NODELAY for the connections of one listener."""

    __slots__ = ("inherited", "misses")

    def __init__(self, listener: socket.socket) -> None:
        #: True: accepted sockets come with the option; False: each gets its
        #: own; None: not known yet (each is asked)
        self.inherited: bool | None = None
        #: connections asked that did not have it
        self.misses = 0
        if raw_family(listener) not in INET_FAMILIES:
            self.inherited = False  # a UNIX listener: set_nodelay does nothing
            return
        try:
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            self.inherited = False

    def apply(self, sock: socket.socket) -> None:
        """Make sure the accepted ``sock`` has TCP_NODELAY (an OSError if the
        connection is already gone, as from ``setsockopt``)."""
        inherited = self.inherited
        if inherited:
            return
        if inherited is None:
            if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
                self.inherited = True
                return
            self.misses += 1
            if self.misses >= PROBES:
                self.inherited = False
        set_nodelay(sock)
