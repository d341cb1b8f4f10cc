"""What Wine does where it differs from Windows: the observations behind the
tests marked for Wine and the list in docs/windows.md.

Run on Linux through the harness, which provides $WINE and $WINE_PY:

    bash scripts/wine_test.sh --shell python3 "$PWD/scripts/wine/observations.py"

The Linux side listens on 127.0.0.1 and reports what Wine's sockets put on the
wire; the Windows side (this file run by Windows Python under Wine, argument
``wine``) reports what a Windows program sees.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter

ROUNDS = 20


def outcome(sock: socket.socket) -> str:
    """What one recv() on ``sock`` gives."""
    try:
        data = sock.recv(10)
    except OSError as exc:
        return type(exc).__name__
    return "b''" if data == b"" else "data"


def pair() -> tuple[socket.socket, socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    server.close()
    return client, accepted


def reset_close(sock: socket.socket) -> None:
    linger = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    sock.close()


def recv_after_reset(client: socket.socket, server: socket.socket) -> str:
    reset_close(client)
    time.sleep(0.05)
    return outcome(server)


def recv_waiting_during_reset(client: socket.socket, server: socket.socket) -> str:
    results: list[str] = []
    reader = threading.Thread(target=lambda: results.append(outcome(server)))
    reader.start()
    time.sleep(0.05)
    reset_close(client)
    reader.join()
    return results[0]


def select_then_recv(client: socket.socket, server: socket.socket) -> str:
    server.setblocking(False)
    reset_close(client)
    select.select([server], [], [], 5)
    return outcome(server)


def unread_data_close(client: socket.socket, server: socket.socket) -> str:
    server.sendall(b"unread")
    time.sleep(0.05)
    client.close()  # unread data: a reset on Linux and on Windows
    time.sleep(0.05)
    return outcome(server)


CASES = {
    "recv() called after the reset": recv_after_reset,
    "recv() waiting when the reset came": recv_waiting_during_reset,
    "select(), then recv()": select_then_recv,
    "peer closed with unread data, then recv()": unread_data_close,
}


def handle_count() -> int:
    import ctypes

    if sys.platform != "win32":
        return -1

    kernel32 = ctypes.WinDLL("kernel32")
    count = ctypes.c_ulong()
    kernel32.GetProcessHandleCount(kernel32.GetCurrentProcess(), ctypes.byref(count))
    return count.value


def wine_side(port: int) -> None:
    seen = {what: Counter[str]() for what in CASES}
    for _ in range(ROUNDS):
        for what, case in CASES.items():
            client, server = pair()
            seen[what][case(client, server)] += 1
            server.close()
        to_linux = socket.create_connection(("127.0.0.1", port))
        time.sleep(0.02)
        reset_close(to_linux)
    for what, counts in seen.items():
        print(f"wine: {what}: {dict(counts)}", flush=True)

    code = "import os, signal; os.kill(os.getpid(), signal.SIGINT); print('alive')"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    print(f"wine: os.kill(own pid, SIGINT): exit code {child.returncode}, output {child.stdout!r}")

    # the measures a leak check could use, over identical rounds of work
    descriptors, handles = [], []
    for _ in range(8):
        for _ in range(25):
            client, server = pair()
            client.sendall(b"ping")
            server.recv(4)
            client.close()
            server.close()
        descriptors.append(len(os.listdir("/proc/self/fd")))
        handles.append(handle_count())
    print(f"wine: 8 identical rounds: the process's Linux descriptors {descriptors}")
    print(f"wine: 8 identical rounds: GetProcessHandleCount {handles}", flush=True)


def linux_side() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(300)
    port = listener.getsockname()[1]
    seen: Counter[str] = Counter()

    def accept_all() -> None:
        for _ in range(ROUNDS):
            conn, _ = listener.accept()
            conn.settimeout(10)
            try:
                seen["FIN (b'')" if conn.recv(10) == b"" else "data"] += 1
            except ConnectionResetError:
                seen["RST (ECONNRESET)"] += 1
            conn.close()

    thread = threading.Thread(target=accept_all)
    thread.start()
    wine_py = "Z:" + os.environ["WINE_PY"]
    script = "Z:" + os.path.abspath(__file__)
    subprocess.run(
        [os.environ["WINE"], wine_py, script, "wine", str(port)],
        stdin=subprocess.DEVNULL,
        check=True,
    )
    thread.join()
    print(f"linux: a Linux peer saw Wine's SO_LINGER {{1, 0}} close as {dict(seen)}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["wine"]:
        wine_side(int(sys.argv[2]))
    else:
        linux_side()
