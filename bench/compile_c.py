"""Compile the C helpers (load generator and the C floor servers) with gcc -O2."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_BUILD_DIR = BENCH_DIR / ".build"
PROGRAMS = ("loadgen", "floor", "floor_uring")
#: built where the compiler can: floor_uring needs a <linux/io_uring.h> with
#: multishot receives (Linux 6.0's); without it only its backend is missing
OPTIONAL = frozenset({"floor_uring"})
#: included by both floors (a change to it rebuilds every program: simpler
#: than knowing which includes it)
COMMON_HEADER = BENCH_DIR / "floor_common.h"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-std=gnu11")


def build_programs(build_dir: Path = DEFAULT_BUILD_DIR) -> dict[str, Path]:
    """Build every C program that is missing or older than its source.

    Returns the path of each binary by program name (an optional one that
    did not compile is left out, saying why on stderr), with ``wrk`` (the
    HTTP load generator, not built here) when it is installed.
    """
    build_dir.mkdir(parents=True, exist_ok=True)
    binaries: dict[str, Path] = {}
    for name in PROGRAMS:
        source = BENCH_DIR / f"{name}.c"
        binary = build_dir / name
        newest = max(source.stat().st_mtime, COMMON_HEADER.stat().st_mtime)
        if not binary.exists() or binary.stat().st_mtime < newest:
            command = ["gcc", *CFLAGS, "-o", str(binary), str(source)]
            if name not in OPTIONAL:
                subprocess.run(command, check=True)
            else:
                built = subprocess.run(command, capture_output=True, text=True)
                if built.returncode != 0:
                    binary.unlink(missing_ok=True)
                    lines = built.stderr.strip().splitlines() or ["gcc failed"]
                    why = next((line for line in lines if "error" in line), lines[0])
                    print(f"compile_c: {name} not built ({why})", file=sys.stderr)
                    continue
        binaries[name] = binary
    wrk = shutil.which("wrk")
    if wrk is not None:
        binaries["wrk"] = Path(wrk)
    return binaries
