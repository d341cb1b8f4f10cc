"""``python -m anyio_iocp info``: what this machine offers the backend."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
from typing import Any

from anyio_iocp._face.engines import probe_io_uring


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def gather() -> dict[str, Any]:
    """The engine a run would choose, io_uring's state, and the versions.

    ``engine`` is None and ``error`` says why when a run would fail to start
    (an engine forced by ``$ANYIO_IOCP_ENGINE`` that cannot run, or an
    unknown engine name there)."""
    import anyio_iocp

    engine: dict[str, Any] | None = None
    error: str | None = None
    try:
        info = anyio_iocp.engine_info()
    except (RuntimeError, ValueError) as exc:
        error = str(exc)
    else:
        engine = {
            "name": info.name,
            "selected_by": info.selected_by,
            "reason": info.reason,
            "details": dict(info.details),
        }
    usable, reason, details = probe_io_uring()
    return {
        "engine": engine,
        "error": error,
        "io_uring": {"usable": usable, "reason": reason, "details": dict(details)},
        "versions": {
            "anyio-iocp": anyio_iocp.__version__,
            "anyio": _version("anyio"),
            "trio": _version("trio"),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
        },
        "platform": platform.platform(),
    }


def _yes_no(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def format_text(data: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    engine = data["engine"]
    if engine is None:
        rows.append(("engine", f"a run would not start: {data['error']}"))
    else:
        rows += [
            ("engine", engine["name"]),
            ("selected by", engine["selected_by"]),
            ("reason", engine["reason"]),
        ]
    uring = data["io_uring"]
    if engine is None or engine["name"] != "io_uring":
        if uring["usable"]:
            rows.append(("io_uring", "available, not chosen (the engine was forced)"))
        else:
            rows.append(("io_uring", f"not available: {uring['reason']}"))
    kernel = (engine or {}).get("details") or uring["details"]
    if kernel:
        rows.append(("kernel", ", ".join(f"{k} {_yes_no(v)}" for k, v in kernel.items())))
    versions = data["versions"]
    rows += [
        ("anyio-iocp", versions["anyio-iocp"]),
        ("AnyIO", str(versions["anyio"])),
        ("Trio", str(versions["trio"])),
        ("Python", versions["python"]),
        ("platform", data["platform"]),
    ]
    width = max(len(label) for label, _ in rows) + 2
    return "\n".join(f"{label:<{width}}{value}" for label, value in rows)


def show(as_json: bool) -> int:
    data = gather()
    if as_json:
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_text(data))
    return 0 if data["engine"] is not None else 1
