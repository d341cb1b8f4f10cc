"""AnyIO's test suite under Wine: Windows CPython, the IOCP engine.

Used by ``anyio_suite.py --wine``, which ``scripts/wine_conformance.sh`` runs
inside the tree ``scripts/wine_test.sh`` prepares (``--shell``: ``$WINE`` runs
``$WINE_PY``, the Windows Python whose site-packages holds this checkout,
AnyIO, Trio and the test tools).  pip cannot run under Wine, so AnyIO's test
dependencies are fetched on Linux as ``win_amd64`` wheels and unzipped into a
directory of their own that the Windows Python finds through ``PYTHONPATH``;
the shared site-packages of ``wine_test.sh`` is not touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from anyio_suite import DepReport, Target, log, log_skipped, pip_each, test_requirements

#: the environment markers of the Windows Python under Wine
WINDOWS_MARKERS = {
    "sys_platform": "win32",
    "platform_system": "Windows",
    "os_name": "nt",
    "platform_machine": "AMD64",
    "python_version": "3.13",
    "python_full_version": "3.13.2",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
#: what ``pip download`` needs to fetch wheels for that Python from Linux
WINDOWS_WHEELS = [
    "--only-binary=:all:",
    "--platform",
    "win_amd64",
    "--python-version",
    "3.13",
    "--implementation",
    "cp",
]
#: kept at the versions wine_test.sh installed: what is under test, and
#: cryptography (newer wheels fail under Wine 8: "DLL load failed while
#: importing _rust"; wine_test.sh pins it below 43)
PINNED = ("anyio", "trio", "pytest", "cryptography")
#: the iocp engines the Wine run compares with trio
ENGINES = "iocp,readiness,iocp+strict"


def wine_paths() -> tuple[str, Path]:
    """``$WINE`` and ``$WINE_PY``, as ``scripts/wine_test.sh --shell`` exports them."""
    wine, python = os.environ.get("WINE"), os.environ.get("WINE_PY")
    if not wine or not python:
        sys.exit("--wine runs inside wine_test.sh --shell: use scripts/wine_conformance.sh")
    return wine, Path(python)


def site_packages(python: Path) -> Path:
    return python.parent / "Lib" / "site-packages"


def installed_version(python: Path, name: str) -> str:
    """The version of ``name`` unzipped into the Wine Python's site-packages."""
    found = sorted(site_packages(python).glob(f"{name}-*.dist-info"))
    if not found:
        sys.exit(f"{name} is not in {site_packages(python)}")
    return found[-1].name[len(name) + 1 : -len(".dist-info")]


def install_wheels(python: Path, pyproject: Path, cache: Path) -> tuple[DepReport, Path]:
    """Fetch AnyIO's test dependencies as win_amd64 wheels, one requirement at a
    time (one without a Windows wheel is skipped and listed), and unzip them
    into ``cache/site``; fetched again only when the list changes."""
    wanted, excluded = test_requirements(pyproject, WINDOWS_MARKERS)
    report = DepReport(skipped=dict(excluded))
    site, wheels, done = cache / "site", cache / "wheels", cache / "site.done"
    pins = [f"{name}=={installed_version(python, name)}" for name in PINNED]
    signature = [*pins, *wanted]
    if done.exists():
        cached = json.loads(done.read_text())
        if cached["signature"] == signature:
            report.installed = cached["installed"]
            report.skipped.update(cached["skipped"])
            return report, site
    shutil.rmtree(site, ignore_errors=True)
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    constraints = cache / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    pip = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check"]
    pip = [*pip, *WINDOWS_WHEELS, "-c", str(constraints), "-d", str(wheels)]
    pip_each(pip, wanted, report, "no win_amd64 wheel")
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(site)
    fetched = {"installed": report.installed, "skipped": report.skipped}
    done.write_text(json.dumps({"signature": signature, **fetched}))
    log(f"test dependencies (win_amd64 wheels): {', '.join(report.installed)}")
    log_skipped(report)
    return report, site


def wine_target(wine: list[str], python: Path, site: Path) -> Target:
    """pytest under Wine (``wine``: the command, maybe behind a prefix), with
    the dependency directory on PYTHONPATH."""
    return Target(
        python=[*wine, str(python)],
        path=lambda p: "Z:" + str(p).replace("/", "\\"),
        pathsep=";",
        pythonpath=[site],
        engines=ENGINES,
        cleanup=end_wine,
    )


def end_wine() -> None:
    """End every process of the prefix (a pytest killed at its time limit)."""
    server = shutil.which("wineserver") or "/usr/lib/wine/wineserver64"
    subprocess.run([server, "-k"], check=False, capture_output=True)
