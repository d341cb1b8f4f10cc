"""CPython's socket object, below its public API: the accept that returns a
descriptor.

``socket.socket.accept()`` calls the C method ``_accept()``, which returns
the new connection's descriptor and address, and wraps the descriptor in a
``socket.socket``.  The IOCP engine wraps it in a class of its own instead
(``anyio_iocp._engines.iocp.inherited``).  ``_accept`` has had this form in
every CPython 3 release; its absence is checked here, at import.
"""

from __future__ import annotations

import socket
from typing import Any

if not callable(getattr(socket.socket, "_accept", None)):  # pragma: no cover
    raise ImportError(
        "this Python's socket.socket has no _accept() (the C accept that "
        "socket.accept() wraps): anyio_iocp's IOCP engine needs it"
    )


def accept_descriptor(sock: socket.socket) -> tuple[int, Any]:
    """``sock``'s next connection as (descriptor, address): what
    ``sock.accept()`` does before it makes the socket object; OSError as
    ``accept()`` raises it."""
    return sock._accept()  # type: ignore[attr-defined,no-any-return]
