"""Socket addresses and ancillary data in the kernel's binary layout.

The completion engines hand the kernel ``struct sockaddr`` and control
(``cmsghdr``) buffers themselves, so the conversions that :mod:`socket` does
inside ``sendto``/``recvmsg`` are done here, with the same results as the
standard library: IPv4 ``(host, port)``, IPv6 ``(host, port, flowinfo,
scope_id)``, UNIX paths as ``str`` (abstract names as ``bytes``), and ancillary
data as ``[(level, type, data), ...]``.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable
from typing import Any

#: sizeof(struct sockaddr_storage)
SOCKADDR_STORAGE = 128
#: sizeof(sun_path) in struct sockaddr_un (Linux)
UNIX_PATH_MAX = 108
#: struct cmsghdr: size_t cmsg_len; int cmsg_level; int cmsg_type
_CMSGHDR = struct.Struct("Nii")  # native sizes and alignment
_FAMILY = struct.Struct("=H")

AncData = list[tuple[int, int, bytes]]


def pack_sockaddr(family: int, address: Any) -> bytes:
    """``struct sockaddr_in``/``_in6``/``_un`` for a numeric address or a path."""
    if family == socket.AF_INET:
        host, port = address[0], address[1]
        return _FAMILY.pack(family) + struct.pack("!H4s8x", port, socket.inet_pton(family, host))
    if family == socket.AF_INET6:
        host, port = address[0], address[1]
        flowinfo = address[2] if len(address) > 2 else 0
        scope_id = address[3] if len(address) > 3 else 0
        if "%" in host:
            host, _, scope = host.partition("%")
            scope_id = int(scope) if scope.isdigit() else socket.if_nametoindex(scope)
        return (
            _FAMILY.pack(family)
            + struct.pack("!HI16s", port, flowinfo, socket.inet_pton(family, host))
            + struct.pack("=I", scope_id)
        )
    if family == getattr(socket, "AF_UNIX", None):
        if not isinstance(address, (str, bytes, os.PathLike)):
            raise TypeError(f"a UNIX socket address is a path (str or bytes), not {address!r}")
        path = os.fsencode(address)
        if not path.startswith(b"\0"):
            path += b"\0"  # a file system path is NUL-terminated; an abstract name is not
        if len(path) > UNIX_PATH_MAX:
            raise OSError(f"AF_UNIX path too long ({len(path)} > {UNIX_PATH_MAX} bytes)")
        return _FAMILY.pack(family) + path
    raise ValueError(
        f"unsupported address family {family!r}: expected AF_INET, AF_INET6 or AF_UNIX"
    )


def unpack_sockaddr(raw: bytes) -> Any:
    """The address tuple (or path) that :mod:`socket` would return for ``raw``."""
    if not raw:
        return None
    (family,) = _FAMILY.unpack_from(raw)
    if family == socket.AF_INET:
        port, host = struct.unpack_from("!H4s", raw, 2)
        return socket.inet_ntop(family, host), port
    if family == socket.AF_INET6:
        port, flowinfo, host = struct.unpack_from("!HI16s", raw, 2)
        (scope_id,) = struct.unpack_from("=I", raw, 24)
        return socket.inet_ntop(family, host), port, flowinfo, scope_id
    if family == getattr(socket, "AF_UNIX", None):
        path = raw[2:]
        if path.startswith(b"\0"):
            return bytes(path)  # abstract namespace
        return os.fsdecode(path.split(b"\0", 1)[0])
    raise ValueError(f"unsupported address family {family!r} in a received address")


def pack_ancdata(ancdata: Iterable[tuple[int, int, Any]]) -> bytes:
    """Control messages for ``sendmsg``, each padded to ``CMSG_SPACE``."""
    out = bytearray()
    for level, kind, data in ancdata:
        payload = bytes(data)
        length = socket.CMSG_LEN(len(payload))
        out += _CMSGHDR.pack(length, level, kind) + payload
        out += bytes(socket.CMSG_SPACE(len(payload)) - length)
    return bytes(out)


def unpack_ancdata(raw: bytes) -> AncData:
    """``[(level, type, data), ...]`` from a received control buffer."""
    items: AncData = []
    offset = 0
    header = _CMSGHDR.size
    while offset + header <= len(raw):
        length, level, kind = _CMSGHDR.unpack_from(raw, offset)
        if length < header:
            break
        end = min(offset + length, len(raw))  # truncated (MSG_CTRUNC): what is there
        items.append((level, kind, bytes(raw[offset + header : end])))
        offset += socket.CMSG_SPACE(length - header)
    return items
