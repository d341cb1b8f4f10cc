"""TCP_NODELAY on accepted connections, set once on the listener where the
kernel passes it on.

AnyIO turns Nagle's algorithm off on every TCP stream, accepted ones
included: one ``setsockopt`` per connection.  Linux copies the listening
socket's TCP_NODELAY to the sockets it accepts, so a listener that has it
hands out connections that have it, and the call per connection is a system
call for nothing (about 5% of the server's time on the churn benchmark:
connect, one exchange, close).

Nothing is assumed: the listener's socket gets the option, and the first
connection it accepts is asked (``getsockopt``).  If that one has it, the
listener's later connections are trusted to have it too; if not (a kernel
that does not pass it on, or a listener whose option could not be set), every
connection gets its own ``setsockopt``, as before.  A program that clears
TCP_NODELAY on the listener's raw socket after its first accept would get
connections without it (AnyIO's own backends never set it on a listener).
"""

from __future__ import annotations

import socket

from anyio_iocp._interface.engine import INET_FAMILIES, raw_family, set_nodelay


class AcceptedNodelay:
    """TCP_NODELAY for the connections of one listener."""

    __slots__ = ("inherited",)

    def __init__(self, listener: socket.socket) -> None:
        #: True: accepted sockets come with the option (the first one had it);
        #: False: each gets its own; None: not known yet (nothing accepted)
        self.inherited: bool | None = None
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
            inherited = self.inherited = (
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            )
            if inherited:
                return
        set_nodelay(sock)
