"""The AnyIO and Trio versions the reaches into their internals were written
for, and the check every reach makes before it is used.

``pyproject.toml`` pins the same ranges; an installation that ignores the pins
(``pip install --no-deps``, a vendored copy) meets :func:`written_for` first.
"""

from __future__ import annotations

import sys

TESTED_ANYIO = "4.16"
TESTED_TRIO = "0.35"


def installed(distribution: str) -> str:
    """The installed version of ``distribution``: the ``__version__`` of its
    imported module where it has one (Trio; every run checks Trio's version),
    otherwise its metadata.  ``importlib.metadata`` is imported only then: it
    brings some 9 ms of the standard library (``email`` and more) into a run's
    start."""
    version = getattr(sys.modules.get(distribution), "__version__", None)
    if isinstance(version, str):
        return version
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def written_for(distribution: str, tested: str) -> bool:
    """Whether the installed ``distribution`` is the ``tested`` minor release."""
    version = installed(distribution)
    return version == tested or version.startswith(tested + ".")
