"""``python -m anyio_iocp``: ``info`` and ``run``, each in a subprocess.

The subprocesses import the same anyio_iocp as this test process (its
directory on ``PYTHONPATH``), except the demo's run, which runs from the
checkout as ``python demo.py`` does."""

from __future__ import annotations

import hashlib
import http.server
import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import anyio_iocp

PACKAGE_ROOT = str(Path(anyio_iocp.__file__).resolve().parent.parent)
REPO_ROOT = Path(__file__).resolve().parent.parent

#: a program that knows nothing of anyio_iocp: anyio.run with no backend named
PROGRAM = textwrap.dedent(
    """
    import sys
    import anyio
    import anyio_iocp
    import sniffio
    from anyio.abc import SocketAttribute

    async def main():
        async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
            port = listener.extra(SocketAttribute.local_port)
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                print("library", sniffio.current_async_library())
                print("stream engine", stream.engine_info.name)
                print("run engine", anyio_iocp.engine_info().name)

    def finish():
        print("name", __name__)
        print("argv", sys.argv)
        print("path0", sys.path[0])
        if sys.argv[1:2] == ["exit"]:
            sys.exit(int(sys.argv[2]))
        if sys.argv[1:2] == ["raise"]:
            raise ValueError("the program failed")

    if __name__ == "__main__":
        anyio.run(main)
        finish()
    """
)


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.pop("ANYIO_IOCP_ENGINE", None)
    full_env["PYTHONPATH"] = PACKAGE_ROOT
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "anyio_iocp", *args],
        capture_output=True,
        text=True,
        cwd=cwd or PACKAGE_ROOT,  # python -m puts it first on sys.path
        env=full_env,
        timeout=120,
    )


def lines_of(output: str) -> dict[str, str]:
    """``key value`` lines (the key is the first word, or two for the
    programs' ``stream engine`` / ``run engine``)."""
    result = {}
    for line in output.splitlines():
        words = line.split(" ", 2)
        if words[0] in ("stream", "run") and len(words) == 3:
            result[f"{words[0]} {words[1]}"] = words[2]
        elif words[0]:
            result[words[0]] = line[len(words[0]) :].strip()
    return result


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "prog.py"
    path.write_text(PROGRAM)
    return path


# -- info -----------------------------------------------------------------


def test_info_names_the_engine_a_run_would_choose() -> None:
    info = anyio_iocp.engine_info()
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    rows = lines_of(result.stdout)
    assert rows["engine"] == info.name
    assert result.stdout.count(info.reason) >= 1
    assert rows["anyio-iocp"] == anyio_iocp.__version__
    assert rows["AnyIO"] == importlib.metadata.version("anyio")
    assert rows["Trio"] == importlib.metadata.version("trio")
    assert rows["Python"] == f"{platform.python_implementation()} {platform.python_version()}"
    assert rows["platform"] == platform.platform()
    if info.name == "io_uring":
        for key, value in info.details:
            shown = ("yes" if value else "no") if isinstance(value, bool) else str(value)
            assert f"{key} {shown}" in rows["kernel"]
    # no command is the same as info
    assert run_cli().stdout == result.stdout


def test_info_json() -> None:
    info = anyio_iocp.engine_info()
    result = run_cli("info", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["engine"] == {
        "name": info.name,
        "selected_by": info.selected_by,
        "reason": info.reason,
        "details": dict(info.details),
    }
    assert data["error"] is None
    assert data["versions"]["anyio-iocp"] == anyio_iocp.__version__
    assert data["versions"]["anyio"] == importlib.metadata.version("anyio")
    assert data["versions"]["trio"] == importlib.metadata.version("trio")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_info_says_why_io_uring_is_not_the_engine() -> None:
    code = (
        "import sys; sys.modules['anyio_iocp._engines.io_uring._uring'] = None; "
        "from anyio_iocp._face.cli.main import main; sys.exit(main(['info']))"
    )
    env = {k: v for k, v in os.environ.items() if k != "ANYIO_IOCP_ENGINE"}
    env["PYTHONPATH"] = PACKAGE_ROOT
    result = subprocess.run(
        [sys.executable, "-P", "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rows = lines_of(result.stdout)
    assert rows["engine"] == "readiness"
    assert rows["io_uring"].startswith(
        "not available: the io_uring shim (anyio_iocp._engines.io_uring._uring) is not built"
    )
    assert "kernel" not in rows


def test_info_with_an_engine_that_cannot_start() -> None:
    result = run_cli("info", "--json", env={"ANYIO_IOCP_ENGINE": "turbo"})
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["engine"] is None
    assert data["error"].startswith("ANYIO_IOCP_ENGINE: unknown engine 'turbo'")


# -- run ------------------------------------------------------------------


def test_run_script_without_a_backend_named_runs_on_iocp(program: Path) -> None:
    expected_engine = anyio_iocp.engine_info().name
    result = run_cli("run", str(program), "one", "--two", cwd=program.parent.parent)
    assert result.returncode == 0, result.stderr
    rows = lines_of(result.stdout)
    assert rows["library"] == "iocp"
    assert rows["stream engine"] == expected_engine
    assert rows["run engine"] == expected_engine
    assert rows["name"] == "__main__"
    assert rows["argv"] == repr([str(program), "one", "--two"])
    assert rows["path0"] == str(program.parent.resolve())


def test_run_redirects_asyncio_and_trio_and_drops_asyncio_options(tmp_path: Path) -> None:
    (tmp_path / "both.py").write_text(
        textwrap.dedent(
            """
            import anyio, sniffio

            async def main():
                return sniffio.current_async_library()

            print(anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True}))
            print(anyio.run(main, backend="trio"))
            """
        )
    )
    result = run_cli("run", "both.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["iocp", "iocp"]
    assert "'use_uvloop'" in result.stderr and "not used on iocp" in result.stderr


def test_engine_option_reaches_the_run(program: Path) -> None:
    result = run_cli("run", "--engine", "readiness", str(program), cwd=program.parent)
    assert result.returncode == 0, result.stderr
    rows = lines_of(result.stdout)
    assert rows["stream engine"] == "readiness"
    assert rows["run engine"] == "readiness"


def test_tuning_options_reach_the_run(tmp_path: Path) -> None:
    (tmp_path / "tuned.py").write_text(
        textwrap.dedent(
            """
            import anyio
            from anyio.abc import SocketAttribute
            from anyio_iocp import TuningAttribute

            async def main():
                async with await anyio.create_tcp_listener(local_host="127.0.0.1") as lst:
                    port = lst.extra(SocketAttribute.local_port)
                    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                        print(stream.extra(TuningAttribute.sendcap).cap)
                        print(stream.extra(TuningAttribute.recvburst).cap)

            anyio.run(main)
            """
        )
    )
    result = run_cli("run", "--profile", "ftpd", "--sendcap", "7", "tuned.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    sendcap, recvburst = result.stdout.split()
    assert sendcap == "7"  # the setting wins over the profile
    assert recvburst == str(anyio_iocp.PROFILES["ftpd"].recvburst)


def test_run_module_as_main(tmp_path: Path) -> None:
    (tmp_path / "mymod.py").write_text(PROGRAM)
    result = run_cli("run", "-m", "mymod", "a", "--engine", "x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = lines_of(result.stdout)
    assert rows["library"] == "iocp"
    assert rows["name"] == "__main__"
    # as `python -m mymod a --engine x` sets them
    assert rows["argv"] == repr([str(tmp_path / "mymod.py"), "a", "--engine", "x"])
    assert rows["path0"] == str(tmp_path)


def test_run_module_function(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            """
            import sys
            import anyio_iocp, sniffio

            async def serve(*args):
                print(sniffio.current_async_library(), anyio_iocp.engine_info().name)
                print(list(args), sys.argv)
            """
        )
    )
    result = run_cli("run", "--engine", "readiness", "app:serve", "x", "y", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.splitlines()
    assert first == "iocp readiness"
    assert second == repr(["x", "y"]) + " " + repr(["app:serve", "x", "y"])


@pytest.mark.parametrize(("word", "status"), [("exit", "3"), ("exit", "0")])
def test_exit_status_is_kept(program: Path, word: str, status: str) -> None:
    result = run_cli("run", str(program), word, status, cwd=program.parent)
    assert result.returncode == int(status), result.stderr


def test_exception_prints_the_traceback_and_exits_1(program: Path) -> None:
    result = run_cli("run", str(program), "raise", cwd=program.parent)
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):\n")
    # the traceback starts in the program, not in the command line's frames
    first_frame = result.stderr.splitlines()[1]
    assert first_frame.startswith(f'  File "{program}"'), result.stderr
    assert result.stderr.rstrip().endswith("ValueError: the program failed")


@pytest.mark.parametrize(
    ("args", "messages"),
    [
        # (argparse quotes the choices in its message differently between Pythons)
        (["--engine", "turbo", "p.py"], ["--engine: invalid choice:", "turbo", "readiness"]),
        (["--profile", "fast", "p.py"], ["--profile: invalid choice:", "fast", "ftpd"]),
        (["--sendcap", "0", "p.py"], ["argument --sendcap: sendcap must be from 1 to"]),
        (["--backlog", "many", "p.py"], ["argument --backlog: not an integer: 'many'"]),
        ([], ["a TARGET is needed: a script path (prog.py), -m module, or module:function"]),
        (["missing.py"], ["'missing.py': no such file"]),
        (["missing"], ["'missing' is not a file: expected a script path"]),
        (["-m", "no_such_module_here"], ["no module named 'no_such_module_here'"]),
        (["no_such_module_here:main"], ["no module named 'no_such_module_here'"]),
        (["json:no_such_function"], ["json has no attribute 'no_such_function'"]),
    ],
)
def test_bad_input_is_a_usage_error(tmp_path: Path, args: list[str], messages: list[str]) -> None:
    result = run_cli("run", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("usage: python -m anyio_iocp run"), result.stderr
    for message in messages:
        assert message in result.stderr


def test_demo_runs_on_iocp() -> None:
    """Every anyio.run of the demo runs on iocp under ``run``, and ``--stats``
    sums up each of them at exit."""
    if not (REPO_ROOT / "demo.py").exists():
        pytest.skip("demo.py is in the checkout only")
    result = run_cli(
        "run", "--stats", "demo.py", "--quick", "--backends", "iocp,trio", cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines() if line}
    assert rows["verified"] == ["yes", "yes"]
    # the demo's two columns are two runs, both on iocp
    assert "anyio-iocp statistics: run 2 of 2" in result.stderr
    summaries = [
        line for line in result.stderr.splitlines() if line.startswith("anyio-iocp run on")
    ]
    assert len(summaries) == 2, result.stderr


#: plain httpx code, nothing of anyio_iocp: fetches a URL N times and checks each body
HTTPX_SCRIPT = textwrap.dedent(
    """
    import hashlib
    import sys

    import anyio
    import httpx
    import sniffio

    async def main(url, count, digest):
        async with httpx.AsyncClient() as client:
            for _ in range(count):
                response = await client.get(url)
                assert response.status_code == 200, response.status_code
                assert hashlib.sha256(response.content).hexdigest() == digest
        print("library", sniffio.current_async_library())
        print("checked", count)

    anyio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3])
    """
)


@pytest.fixture
def http_server() -> Iterator[tuple[str, bytes]]:
    """Python's threading HTTP/1.1 server in a thread: (URL, the body it serves)."""
    body = os.urandom(50_000)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", body
    finally:
        server.shutdown()
        server.server_close()


def test_unchanged_httpx_script_runs_with_a_summary(
    tmp_path: Path, http_server: tuple[str, bytes]
) -> None:
    """An httpx script that knows nothing of anyio_iocp runs on iocp under
    ``run`` (the adapters apply by themselves), every body checked, and
    ``--stats`` prints the run's summary."""
    url, body = http_server
    script = tmp_path / "fetch.py"
    script.write_text(HTTPX_SCRIPT)
    digest = hashlib.sha256(body).hexdigest()
    result = run_cli("run", "--stats", str(script), url, "20", digest, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines_of(result.stdout) == {"library": "iocp", "checked": "20"}
    summary = result.stderr.split("anyio-iocp statistics: run 1 of 1\n", 1)[1].splitlines()
    assert summary[0].startswith(f"anyio-iocp run on {anyio_iocp.engine_info().name}: ")
    # keep-alive: one connection for the 20 requests; every body came through the engine
    assert " 1 streams, 0 listeners" in summary[0]
    match = re.fullmatch(r"  bytes in ([\d,]+), out ([\d,]+)", summary[1])
    assert match is not None, summary[1]
    assert int(match[1].replace(",", "")) > 20 * len(body)

    # with the adapters turned off, httpcore refuses the run again
    refused = run_cli("run", "--no-adapters", str(script), url, "1", digest, cwd=tmp_path)
    assert refused.returncode == 1
    assert "RuntimeError: Running under an unsupported async environment." in refused.stderr


# -- options that need newer parts of the package ----------------------------


def test_trace_goes_to_stderr(program: Path) -> None:
    result = run_cli("run", "--engine", "readiness", "--trace", str(program), cwd=program.parent)
    assert result.returncode == 0, result.stderr
    assert " anyio_iocp.trace.engine: engine.selected: readiness (forced by " in result.stderr
    # without --trace, nothing of it
    quiet = run_cli("run", "--engine", "readiness", str(program), cwd=program.parent)
    assert "anyio_iocp.trace" not in quiet.stderr


@pytest.mark.parametrize(("args", "status"), [(["exit", "4"], 4), (["raise"], 1)])
def test_stats_are_printed_at_exit(program: Path, args: list[str], status: int) -> None:
    """Also when the program calls sys.exit or raises."""
    result = run_cli("run", "--stats", "--engine", "readiness", str(program), *args)
    assert result.returncode == status, result.stderr
    after = result.stderr.split("anyio-iocp statistics: run 1 of 1\n", 1)[1]
    assert after.startswith("anyio-iocp run on readiness: "), result.stderr
    assert "1 streams, 1 listeners" in after.splitlines()[0]
    assert "run 2 of" not in result.stderr
