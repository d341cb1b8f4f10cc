"""Whether the IOCP engine can run here: Windows, with the Winsock extensions
(``AcceptEx``, ``GetAcceptExSockaddrs``) loadable."""

from __future__ import annotations

import functools
import socket
import sys


@functools.cache
def probe_iocp() -> tuple[bool, str]:
    """(usable, reason) for the IOCP engine: Windows, with the Winsock extensions."""
    if sys.platform != "win32":
        return False, f"it is the Windows engine and this is {sys.platform}"
    try:
        from anyio_iocp._engines.iocp.winsock import extensions

        extensions(socket.AF_INET)
    except (ImportError, OSError, AttributeError) as exc:
        return False, f"overlapped Winsock is not usable: {exc}"
    return True, (
        "Windows: overlapped Winsock (AcceptEx, WSARecv, WSASend) on Trio's completion port"
    )
