"""What one received message costs under Wine, by the way it is waited for.

Three ways to take 64 bytes that the peer (a socket of the same process)
sends, each repeated ``--messages`` times on a fresh loopback connection:

* ``overlapped``: a ``WSARecv`` is posted first, then the peer sends, and the
  packet is taken from a completion port with ``GetQueuedCompletionStatus``
  (how the IOCP engine waits);
* ``readiness``: the peer sends, ``select()`` reports the socket readable, then
  a ``recv()`` takes the bytes (a readiness wait, as Trio's AFD poll is one);
* ``direct``: the peer sends, then a ``recv()`` finds the bytes there.

Per message it prints the process's CPU time (``time.process_time``) and
the wineserver's (read from Linux's ``/proc`` through Wine's ``Z:`` drive,
:mod:`procstat`; the first wineserver found, unless ``--wineserver`` names one).
Both include the peer's send.  The rounds are interleaved; the median and
range are printed.  Run it from the checkout through the Wine harness::

    bash scripts/wine_test.sh --shell sh -c \\
        '"$WINE" "$WINE_PY" "Z:$0" </dev/null 2>&1 | cat' "$PWD/bench/wine_wait_cost.py"

These are Wine figures: they say what Wine's emulation costs, not Windows.
"""

from __future__ import annotations

import argparse
import ctypes
import select
import socket
import statistics
import sys
import time
from collections.abc import Callable

if sys.platform != "win32":
    sys.exit("wine_wait_cost.py runs under Wine (Windows CPython): see its docstring")

from ctypes import wintypes

from procstat import cpu_seconds, find_wineserver

ERROR_IO_PENDING = 997
MESSAGE = b"x" * 64


class OVERLAPPED(ctypes.Structure):
    _fields_ = [
        ("Internal", ctypes.c_size_t),
        ("InternalHigh", ctypes.c_size_t),
        ("Offset", wintypes.DWORD),
        ("OffsetHigh", wintypes.DWORD),
        ("hEvent", wintypes.HANDLE),
    ]


class WSABUF(ctypes.Structure):
    _fields_ = [("len", wintypes.ULONG), ("buf", ctypes.c_char_p)]


kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
ws2 = ctypes.WinDLL("ws2_32", use_last_error=True)
kernel32.CreateIoCompletionPort.restype = wintypes.HANDLE
kernel32.CreateIoCompletionPort.argtypes = [
    wintypes.HANDLE,
    wintypes.HANDLE,
    ctypes.c_size_t,
    wintypes.DWORD,
]
kernel32.GetQueuedCompletionStatus.argtypes = [
    wintypes.HANDLE,
    ctypes.POINTER(wintypes.DWORD),
    ctypes.POINTER(ctypes.c_size_t),
    ctypes.POINTER(ctypes.POINTER(OVERLAPPED)),
    wintypes.DWORD,
]
ws2.WSARecv.argtypes = [
    ctypes.c_size_t,
    ctypes.POINTER(WSABUF),
    wintypes.DWORD,
    ctypes.POINTER(wintypes.DWORD),
    ctypes.POINTER(wintypes.DWORD),
    ctypes.POINTER(OVERLAPPED),
    ctypes.c_void_p,
]
PORT = kernel32.CreateIoCompletionPort(wintypes.HANDLE(-1), None, 0, 0)


def connected_pair() -> tuple[socket.socket, socket.socket]:
    """(receiver, sender): the receiver non-blocking, as the engines' sockets."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        sender = socket.create_connection(listener.getsockname())
        receiver, _ = listener.accept()
    receiver.setblocking(False)
    return receiver, sender


def overlapped(receiver: socket.socket, sender: socket.socket, messages: int) -> None:
    if not kernel32.CreateIoCompletionPort(receiver.fileno(), PORT, 1, 0):
        raise ctypes.WinError(ctypes.get_last_error())
    buf = ctypes.create_string_buffer(len(MESSAGE))
    wsabuf = WSABUF(len(MESSAGE), ctypes.cast(buf, ctypes.c_char_p))
    flags, transferred = wintypes.DWORD(0), wintypes.DWORD()
    key, packet = ctypes.c_size_t(), ctypes.POINTER(OVERLAPPED)()
    ov = OVERLAPPED()
    for _ in range(messages):
        flags.value = 0
        ctypes.memset(ctypes.byref(ov), 0, ctypes.sizeof(ov))
        rc = ws2.WSARecv(
            receiver.fileno(), ctypes.byref(wsabuf), 1, None, ctypes.byref(flags), ov, None
        )
        if rc != 0 and ctypes.get_last_error() != ERROR_IO_PENDING:
            raise ctypes.WinError(ctypes.get_last_error())
        sender.send(MESSAGE)
        if not kernel32.GetQueuedCompletionStatus(
            PORT, ctypes.byref(transferred), ctypes.byref(key), ctypes.byref(packet), 10_000
        ):
            raise ctypes.WinError(ctypes.get_last_error())
        if transferred.value != len(MESSAGE):
            raise RuntimeError(f"WSARecv got {transferred.value} bytes")


def readiness(receiver: socket.socket, sender: socket.socket, messages: int) -> None:
    for _ in range(messages):
        sender.send(MESSAGE)
        select.select([receiver], [], [], 10)
        if len(receiver.recv(len(MESSAGE))) != len(MESSAGE):
            raise RuntimeError("short recv")


def direct(receiver: socket.socket, sender: socket.socket, messages: int) -> None:
    for _ in range(messages):
        sender.send(MESSAGE)
        if len(receiver.recv(len(MESSAGE))) != len(MESSAGE):
            raise RuntimeError("short recv")


WAYS: dict[str, Callable[[socket.socket, socket.socket, int], None]] = {
    "overlapped": overlapped,
    "readiness": readiness,
    "direct": direct,
}


def wineserver_seconds(pid: int | None) -> float:
    """The wineserver's CPU seconds so far (0 without a pid)."""
    return 0.0 if pid is None else cpu_seconds(pid)


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):6.1f} us [{min(values):.1f}-{max(values):.1f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--wineserver", type=int, help="the wineserver's Linux process id (default: found)"
    )
    args = parser.parse_args()
    if args.wineserver is None:
        args.wineserver = find_wineserver()
    process: dict[str, list[float]] = {name: [] for name in WAYS}
    server: dict[str, list[float]] = {name: [] for name in WAYS}
    for _ in range(args.rounds):
        for name, way in WAYS.items():
            receiver, sender = connected_pair()
            with receiver, sender:
                wine, cpu = wineserver_seconds(args.wineserver), time.process_time()
                way(receiver, sender, args.messages)
                cpu = time.process_time() - cpu
                wine = wineserver_seconds(args.wineserver) - wine
            process[name].append(cpu / args.messages * 1e6)
            server[name].append(wine / args.messages * 1e6)
    print(f"per message, median [range] of {args.rounds} rounds of {args.messages}:")
    for name in WAYS:
        line = f"{name:10s} process CPU {spread(process[name])}"
        if args.wineserver is not None:
            line += f"   wineserver CPU {spread(server[name])}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
