"""Build glue: the cffi extension and the ``.pth`` file that lets AnyIO find "iocp".

Everything else about the project lives in ``pyproject.toml``.
"""

import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = "anyio_iocp.pth"


class BuildPyWithPth(build_py):
    """Also places ``anyio_iocp.pth`` at the root of the installed tree.

    Its single line imports ``_anyio_iocp_hook``, which registers an import hook
    for the module name ``anyio._backends._iocp`` (and nothing else) so that
    ``anyio.run(..., backend="iocp")`` works without importing this package first.
    """

    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "anyio_iocp" / PTH_NAME
        target = Path(self.build_lib) / PTH_NAME
        self.copy_file(str(source), str(target))


def cffi_modules() -> list[str]:
    # The Winsock declarations of the IOCP engine are ABI mode: a pure Python
    # module, generated on every platform without a compiler (loaded on Windows).
    modules = ["_cffi_build/build_winsock.py:ffibuilder"]
    # The io_uring shim only exists on Linux.  ANYIO_IOCP_NO_URING=1 skips it
    # (no C compiler, no kernel headers); the readiness engine is used then.
    if sys.platform.startswith("linux") and os.environ.get("ANYIO_IOCP_NO_URING") != "1":
        modules.append("_cffi_build/build_uring.py:ffibuilder")
    return modules


setup(cmdclass={"build_py": BuildPyWithPth}, cffi_modules=cffi_modules())
