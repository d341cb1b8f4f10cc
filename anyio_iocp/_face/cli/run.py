"""``python -m anyio_iocp run``: an AnyIO program run on the ``"iocp"``
backend without editing it.

A script or a module runs as ``__main__`` (through :mod:`runpy`) with
``anyio.run`` replaced for the duration: a call that names no backend, or
``"asyncio"``, ``"trio"`` or ``"iocp"``, runs on ``"iocp"`` with the command
line's backend options merged over its own.  A ``module:function`` target is
an async function, run with ``anyio.run`` directly.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import runpy
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio

from anyio_iocp._face.cli import report as _cli_report

BACKEND = "iocp"
#: backends whose runs are redirected to "iocp"
REDIRECTED = ("asyncio", "trio", BACKEND)
#: backend_options of a redirected run that the "iocp" backend does not take
ASYNCIO_ONLY_OPTIONS = ("debug", "use_uvloop", "loop_factory")


class TargetError(Exception):
    """The target cannot be found: bad input, reported as a usage error."""


@dataclass(frozen=True)
class Target:
    kind: str  # "script", "module" or "function"
    name: str  # the path, the module name, or "module:function"
    args: tuple[str, ...] = ()


@dataclass
class Redirect:
    """What ``anyio.run`` becomes while the program runs."""

    options: dict[str, Any]
    original: Callable[..., Any] = field(default=anyio.run)
    runs: int = 0

    def run(
        self,
        func: Callable[..., Any],
        *args: Any,
        backend: str | None = None,
        backend_options: dict[str, Any] | None = None,
    ) -> Any:
        if backend is not None and backend not in REDIRECTED:
            return self.original(func, *args, backend=backend, backend_options=backend_options)
        own = dict(backend_options or {})
        if backend in (None, "asyncio"):
            dropped = [name for name in own if name in ASYNCIO_ONLY_OPTIONS]
            for name in dropped:
                del own[name]
            if dropped:
                print(
                    f"anyio_iocp run: backend_options {', '.join(map(repr, dropped))} "
                    "are asyncio's: not used on iocp",
                    file=sys.stderr,
                )
        self.runs += 1
        return self.original(func, *args, backend=BACKEND, backend_options={**own, **self.options})


@contextmanager
def redirected_anyio_run(options: dict[str, Any]) -> Iterator[Redirect]:
    redirect = Redirect(dict(options))
    anyio.run = redirect.run  # type: ignore[assignment]
    try:
        yield redirect
    finally:
        anyio.run = redirect.original  # type: ignore[assignment]


def parse_target(words: list[str], module: bool) -> Target:
    """The target from the words after the options (``-m`` already taken)."""
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise TargetError(
            "a TARGET is needed: a script path (prog.py), -m module, or module:function"
        )
    name, args = words[0], tuple(words[1:])
    if module:
        if importlib.util.find_spec(name) is None:
            raise TargetError(f"-m {name}: no module named {name!r}")
        return Target("module", name, args)
    if os.path.exists(name):
        return Target("script", name, args)
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        if not module_name or not attribute:
            raise TargetError(f"{name!r}: expected module:function, e.g. myapp.main:serve")
        if importlib.util.find_spec(module_name) is None:
            raise TargetError(f"{name!r}: no module named {module_name!r}")
        return Target("function", name, args)
    if name.endswith(".py") or os.sep in name:
        raise TargetError(f"{name!r}: no such file")
    raise TargetError(
        f"{name!r} is not a file: expected a script path (prog.py), -m module, or module:function"
    )


def _load_function(spec: str) -> Callable[..., Any]:
    module_name, _, attribute = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{spec!r}: {module_name} has no attribute {attribute!r}") from None
    if not callable(obj):
        raise TargetError(f"{spec!r} is not callable")
    return obj  # type: ignore[no-any-return]


def _set_sys_path_0(entry: str | None) -> None:
    """``sys.path[0]`` as ``python`` would set it for the target.  Here it is
    the current directory, as ``python -m anyio_iocp`` set it, unless python
    runs with ``-P`` (``sys.flags.safe_path``): then it adds no such entry for
    the target either."""
    if sys.flags.safe_path:
        return
    if entry is None:
        del sys.path[0]
    else:
        sys.path[0] = entry


def run_target(target: Target, options: dict[str, Any]) -> None:
    """Run the target; its exceptions (SystemExit too) propagate."""
    if target.kind == "script":
        path = target.name
        sys.argv = [path, *target.args]
        if os.path.isdir(path) or _is_zip(path):
            _set_sys_path_0(None)  # runpy puts the directory or archive there
        else:
            _set_sys_path_0(os.path.dirname(os.path.realpath(path)))
        with redirected_anyio_run(options):
            # __file__ absolute, as python sets it for a script since 3.9
            runpy.run_path(os.path.abspath(path), run_name="__main__")
    elif target.kind == "module":
        sys.argv = [target.name, *target.args]  # runpy sets argv[0] to the module's file
        _set_sys_path_0(os.getcwd())
        with redirected_anyio_run(options):
            runpy.run_module(target.name, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [target.name, *target.args]
        _set_sys_path_0(os.getcwd())
        function = _load_function(target.name)
        with redirected_anyio_run(options) as redirect:
            redirect.run(function, *target.args)


def _is_zip(path: str) -> bool:
    import zipfile

    return zipfile.is_zipfile(path)


def _trim(tb: Any) -> Any:
    """The traceback from the program's first frame on (without this module's
    and runpy's frames)."""
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in ("runpy", __name__):
        tb = tb.tb_next
    return tb


def main(target: Target, options: dict[str, Any], trace: bool, stats: bool) -> int:
    """Run the program; its exit status (1 if it raised, with the traceback
    printed).  ``SystemExit`` passes through, and so does :class:`TargetError`
    when the function of a ``module:function`` target is missing."""
    if trace:
        _cli_report.enable_trace_to_stderr()
    try:
        run_target(target, options)
    except TargetError:
        raise  # bad input: a usage error
    except Exception as exc:
        traceback.print_exception(type(exc), exc, _trim(exc.__traceback__))
        return 1
    finally:
        if stats:
            _cli_report.print_statistics()
    return 0
