"""The library adapters of a run: on by default, one setting turns them off.

``backend_options={"adapters": False}`` or ``ANYIO_IOCP_ADAPTERS=0`` (the option
wins over the environment, as for ``engine``).  When a run starts with adapters
on, the import hook (:mod:`anyio_iocp._face.adapter_hook`) is installed, once, and
every adapted library already imported gets its wrappers
(:mod:`anyio_iocp._face.libcompat`); a library that is not installed is skipped.
The wrappers act only in iocp runs with adapters on, and for libraries enabled
explicitly with ``enable_for``.
"""

from __future__ import annotations

import os

from anyio_iocp._face import adapter_hook as _adapter_hook
from anyio_iocp._face import libcompat as _libcompat

ADAPTERS_ENV = "ANYIO_IOCP_ADAPTERS"
#: environment value -> setting
ENV_VALUES = {"0": False, "1": True}


def requested_adapters(option: object | None) -> bool:
    """The run's setting, from its ``adapters`` option or the environment."""
    if option is not None:
        if not isinstance(option, bool):
            raise ValueError(f"backend option 'adapters' must be True or False, not {option!r}")
        return option
    env = os.environ.get(ADAPTERS_ENV)
    if env is None or env == "":
        return True
    if env not in ENV_VALUES:
        raise ValueError(
            f"{ADAPTERS_ENV}={env!r}: expected one of "
            + ", ".join(map(repr, ENV_VALUES))
            + " (0: adapters off, 1: on)"
        )
    return ENV_VALUES[env]


def install() -> None:
    """Install the import hook (once) and adapt the libraries imported so far."""
    _adapter_hook.install(_libcompat.PATCHED_MODULES, _libcompat.patch_module)
    for name in sorted(_libcompat.PATCHED_MODULES):
        _libcompat.patch_module(name)


def start_run(option: object | None) -> bool:
    """Called as a run starts: the run's setting, with the adapters in place
    if it is on."""
    on = requested_adapters(option)
    if on:
        install()
    return on
