"""Compile the C helpers (load generator and C floor server) with gcc -O2."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_BUILD_DIR = BENCH_DIR / ".build"
PROGRAMS = ("loadgen", "floor")
CFLAGS = ("-O2", "-Wall", "-Wextra", "-std=gnu11")


def build_programs(build_dir: Path = DEFAULT_BUILD_DIR) -> dict[str, Path]:
    """Build every C program that is missing or older than its source.

    Returns the path of each binary by program name, with ``wrk`` (the HTTP
    load generator, not built here) when it is installed.
    """
    build_dir.mkdir(parents=True, exist_ok=True)
    binaries: dict[str, Path] = {}
    for name in PROGRAMS:
        source = BENCH_DIR / f"{name}.c"
        binary = build_dir / name
        if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
            subprocess.run(["gcc", *CFLAGS, "-o", str(binary), str(source)], check=True)
        binaries[name] = binary
    wrk = shutil.which("wrk")
    if wrk is not None:
        binaries["wrk"] = Path(wrk)
    return binaries
