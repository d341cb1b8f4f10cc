"""The backend as a user reaches it: name resolution, sniffio, engine choice."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import anyio
import pytest
import sniffio
import trio
from helpers import SNIFFIO_PLACES, sniffio_seen

import anyio_iocp
from anyio_iocp._face.engines import ENGINE_ENV

pytestmark = pytest.mark.anyio


def run_python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


def test_backend_resolves_without_importing_the_package() -> None:
    result = run_python(
        """
        import sys
        import anyio
        assert "anyio_iocp" not in sys.modules, "imported too early"

        async def main():
            import sniffio
            return sniffio.current_async_library()

        print(anyio.run(main, backend="iocp"))
        print(type(sys.modules["anyio._backends._iocp"].backend_class).__name__)
        print(sys.modules["anyio._backends._iocp"].backend_class.__name__)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["iocp", "ABCMeta", "IocpBackend"]


def test_a_run_reads_versions_without_importlib_metadata() -> None:
    """Every run checks the installed Trio before it reaches into Trio's
    internals (the pass hooks, the ring's wake-up): the version comes from
    ``trio.__version__``, without ``importlib.metadata`` (some 9 ms of start-up,
    measured with ``python -X importtime``).  The versions are the real ones."""
    result = run_python(
        """
        import sys
        import anyio

        async def main():
            from anyio_iocp._internals.versions import installed
            return installed("trio")

        version = anyio.run(main, backend="iocp")
        print(version, "importlib.metadata" in sys.modules)
        from importlib import metadata
        from anyio_iocp._internals.versions import installed
        print(metadata.version("trio"), installed("anyio") == metadata.version("anyio"))
        print(installed("no-such-distribution-here"))
        """
    )
    assert result.returncode == 0, result.stderr
    first, second, third = result.stdout.splitlines()
    version, metadata_imported = first.split()
    assert metadata_imported == "False"
    assert second.split() == [version, "True"]
    assert third == "unknown"


def test_import_then_run() -> None:
    async def main() -> str:
        return sniffio.current_async_library()

    assert anyio.run(main, backend="iocp") == "iocp"


async def test_sniffio_everywhere(anyio_backend: object) -> None:
    """Main task, child tasks, system tasks and calls back from worker threads."""
    assert await sniffio_seen() == dict.fromkeys(SNIFFIO_PLACES, "iocp")


async def test_engine_info_in_run(engine_name: str) -> None:
    info = anyio_iocp.engine_info()
    assert info.name == engine_name
    assert info.selected_by == "forced by backend_options"
    assert engine_name in str(info)


def test_auto_engine_is_io_uring_here() -> None:
    """This project's machines run Linux 6.x with io_uring enabled."""
    if not sys.platform.startswith("linux"):
        pytest.skip("io_uring is Linux only")

    async def main() -> anyio_iocp.EngineInfo:
        return anyio_iocp.engine_info()

    info = anyio.run(main, backend="iocp")
    assert (info.name, info.selected_by) == ("io_uring", "auto")
    assert dict(info.details)["multishot_accept"] in (True, False)


def test_auto_engine_is_iocp_on_windows() -> None:
    if sys.platform != "win32":
        pytest.skip("the iocp engine is Windows only")

    async def main() -> anyio_iocp.EngineInfo:
        return anyio_iocp.engine_info()

    info = anyio.run(main, backend="iocp")
    assert (info.name, info.selected_by) == ("iocp", "auto")


@pytest.mark.parametrize("bad", ["epoll", "", "IO_URING", 3])
def test_unknown_engine_is_a_clear_error(bad: object) -> None:
    async def main() -> None:
        pass

    with pytest.raises(ValueError, match=r"unknown engine .*expected one of 'auto', 'io_uring'"):
        anyio.run(main, backend="iocp", backend_options={"engine": bad})


@pytest.mark.skipif(sys.platform == "win32", reason="the iocp engine runs here")
def test_forcing_the_windows_engine_on_linux_fails() -> None:
    async def main() -> None:
        pass

    with pytest.raises(RuntimeError, match="iocp engine was requested but cannot run"):
        anyio.run(main, backend="iocp", backend_options={"engine": "iocp"})


def test_engine_from_environment() -> None:
    result = run_python(
        """
        import anyio, anyio_iocp

        async def main():
            return anyio_iocp.engine_info()

        info = anyio.run(main, backend="iocp")
        print(info.name, "|", info.selected_by)
        """,
        env={ENGINE_ENV: "readiness"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"readiness | forced by ${ENGINE_ENV}"


def test_bad_engine_in_environment() -> None:
    result = run_python(
        "import anyio; anyio.run(lambda: anyio.sleep(0), backend='iocp')",
        env={ENGINE_ENV: "kqueue"},
    )
    assert result.returncode != 0
    assert f"{ENGINE_ENV}: unknown engine 'kqueue'" in result.stderr


def test_trio_options_still_work() -> None:
    """backend_options keys other than ``engine`` go to trio.run."""

    class Counter(trio.abc.Instrument):
        steps = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            Counter.steps += 1

    async def main() -> str:
        await anyio.sleep(0)
        return sniffio.current_async_library()

    assert (
        anyio.run(
            main,
            backend="iocp",
            backend_options={"instruments": [Counter()], "engine": "readiness"},
        )
        == "iocp"
    )
    assert Counter.steps > 0


def test_engine_info_outside_a_run_does_not_start_one() -> None:
    info = anyio_iocp.engine_info()
    assert info.name in (("iocp",) if sys.platform == "win32" else ("io_uring", "readiness"))
    with pytest.raises(sniffio.AsyncLibraryNotFoundError):
        sniffio.current_async_library()
