"""Start and stop a benchmark server process and learn its port."""

from __future__ import annotations

import select
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pinning import CpuSet, pin_to

BENCH_DIR = Path(__file__).resolve().parent
SERVER_APP = BENCH_DIR / "server_app.py"
FLOOR = "floor"
#: the C floor servers, by backend name: their program in the build folder
#: (bench/floor.c with epoll, bench/floor_uring.c with io_uring)
FLOORS = {FLOOR: "floor", "floor-uring": "floor_uring"}
START_TIMEOUT = 30.0


class ServerError(Exception):
    """The server did not start (or died); the message says why."""


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    log_path: Path


def server_command(
    backend: str, mode: str, backlog: int, python: str, binaries: dict[str, Path]
) -> list[str]:
    if backend in FLOORS:
        program = binaries.get(FLOORS[backend])
        if program is None:
            raise ServerError(f"bench/{FLOORS[backend]}.c was not built (see the build's message)")
        return [str(program), mode, str(backlog)]
    return [python, str(SERVER_APP), backend, mode, str(backlog)]


def log_tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return ""
    return " | ".join(text.splitlines()[-lines:])


def _read_port(proc: subprocess.Popen[str], log_path: Path) -> int:
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerError(f"no port printed within {START_TIMEOUT:.0f}s")
        ready, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.5))
        if ready:
            line = proc.stdout.readline()
            if line.strip().isdigit():
                return int(line)
            if not line:  # EOF: the server exited
                proc.wait()
                raise ServerError(f"exited with status {proc.returncode}: {log_tail(log_path)}")
            raise ServerError(f"unexpected output {line!r}")
        if proc.poll() is not None:
            raise ServerError(f"exited with status {proc.returncode}: {log_tail(log_path)}")


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextmanager
def running_server(
    command: list[str], log_path: Path, cpus: CpuSet | None = None
) -> Iterator[Server]:
    """Run `command` as a server (stderr to `log_path`, pinned to `cpus`)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=pin_to(cpus)
        )
    try:
        port = _read_port(proc, log_path)
        yield Server(proc=proc, port=port, log_path=log_path)
    finally:
        stop_server(proc)
