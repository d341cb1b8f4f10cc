"""``python -m anyio_iocp``: the command line (``info`` and ``run``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from anyio_iocp._face.cli import info as _cli_info
from anyio_iocp._face.cli import run as _cli_run
from anyio_iocp._face.engines import ENGINE_NAMES
from anyio_iocp._face.tuning import PROFILES
from anyio_iocp._interface.settings import validate_setting

PROG = "python -m anyio_iocp"

RUN_DESCRIPTION = """\
Run an AnyIO program on the "iocp" backend without editing it.

TARGET is a script path (prog.py), -m module (run as __main__, as `python -m`
runs it) or module:function (an async function, called as
anyio.run(function, *args, backend="iocp")).  A script or module keeps its
own anyio.run() calls: while it runs, every anyio.run() that names no backend,
or "asyncio", "trio" or "iocp", runs on "iocp" with the options below merged
over its own backend_options (asyncio's own options, debug, use_uvloop and
loop_factory, are dropped with a note on stderr).  A program that runs several
backends one after another (demo.py does) thus runs each on "iocp".  sys.argv
is [TARGET, *args]; sys.path[0] is set as python would set it.  The program's
exit status is kept; an exception prints its traceback and exits with 1.
"""

SETTINGS = ("backlog", "sendcap", "recvburst")


def _setting(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return validate_setting(name, int(text))
        except ValueError as exc:
            if "invalid literal" in str(exc):
                raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="The iocp backend for AnyIO: what this machine offers (info, the "
        "default), and AnyIO programs run on it (run).",
    )
    commands = parser.add_subparsers(dest="command", metavar="{info,run}")
    info = commands.add_parser(
        "info",
        help="the engine a run would choose, and why; kernel details; versions",
        description="The engine a run would choose (engine_info()), why io_uring is "
        "not the engine when it is not, the kernel's io_uring details, and versions.",
    )
    info.add_argument("--json", action="store_true", help="machine-readable output")

    run = commands.add_parser(
        "run",
        help="run an AnyIO program on the iocp backend",
        description=RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage=f"{PROG} run [options] [-m] TARGET [args ...]",
    )
    run.add_argument(
        "--engine",
        choices=ENGINE_NAMES,
        help="the engine of every run (default: as backend_options or "
        "$ANYIO_IOCP_ENGINE say, else auto)",
    )
    run.add_argument("--profile", choices=tuple(PROFILES), help="tuning profile (docs/tuning.md)")
    for name in SETTINGS:
        run.add_argument(f"--{name}", type=_setting(name), metavar="N", help=f"{name} setting")
    run.add_argument("--trace", action="store_true", help="turn the trace on, to stderr (logging)")
    run.add_argument(
        "--stats",
        action="store_true",
        help="print a statistics summary of each run to stderr at exit",
    )
    run.add_argument(
        "--no-adapters",
        action="store_true",
        help="backend_options adapters=False (no library adapters)",
    )
    run.add_argument(
        "-m",
        dest="module",
        action="store_true",
        help="TARGET is a module name, run as __main__",
    )
    run.add_argument(
        "target",
        nargs=argparse.REMAINDER,
        metavar="TARGET [args ...]",
        help="prog.py, -m module, or module:function, then the program's arguments",
    )
    run.set_defaults(usage_error=run.error)
    return parser


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.engine is not None:
        options["engine"] = args.engine
    if args.profile is not None:
        options["profile"] = args.profile
    for name in SETTINGS:
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    if args.no_adapters:
        options["adapters"] = False
    return options


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None or args.command == "info":
        return _cli_info.show(as_json=getattr(args, "json", False))
    try:
        target = _cli_run.parse_target(list(args.target), args.module)
        return _cli_run.main(target, backend_options(args), args.trace, args.stats)
    except _cli_run.TargetError as exc:
        args.usage_error(str(exc))  # exits with 2
        raise
