"""The library adapters apply by default, and one setting turns them off.

* Unchanged httpx code (tests/httpx_unchanged.py, which never imports
  anyio_iocp) in a process of its own, on iocp, against a real nginx started
  here and against the h11 server, over HTTP and HTTPS, every body checked;
  then the same code in the same process on asyncio and on trio.
* A library imported only after the run started is adapted (tests/late_import.py).
* ``backend_options={"adapters": False}`` and ``ANYIO_IOCP_ADAPTERS=0`` bring
  the libraries' refusal back; the option wins over the environment; bad
  values are refused by name.
* With the wrappers in place, asyncio and trio runs get the libraries' own
  answers.

See docs/compat.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import types
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncer
import httpx
import httpx2
import pytest
import trio
import trustme
from asgi_lifespan import LifespanManager
from conftest import ENGINES, VARIANTS
from h11_server import Stats, echo_body, serve
from helpers import explicit_adapters_cleared
from httpx_unchanged import H11_REQUESTS, ROUNDS
from starlette.applications import Starlette

import anyio_iocp
from anyio_iocp._face import libcompat as _libcompat

HERE = Path(__file__).parent
ADAPTERS_ENV = "ANYIO_IOCP_ADAPTERS"
REFUSAL = "Running under an unsupported async environment."
#: sizes of nginx's static files: empty, tiny, around a TLS record and a
#: receive buffer, and about 1 MB
NGINX_SIZES = (0, 1, 100, 4096, 16_385, 65_536, 65_537, 300_000, 1_048_576)
BASE_ENGINES = sorted({VARIANTS[variant][0] for variant in ENGINES})


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANYIO_IOCP_")}
    env.update(extra)
    return env


# -- nginx -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_binary() -> str:
    path = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if path is None:
        pytest.skip(
            "nginx is not installed (Debian: apt-get install nginx; scripts/setup.sh "
            "installs it when run as root)"
        )
    return path


NGINX_CONF = """\
daemon off;
{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {d}/temp/body;
    proxy_temp_path {d}/temp/proxy;
    fastcgi_temp_path {d}/temp/fastcgi;
    uwsgi_temp_path {d}/temp/uwsgi;
    scgi_temp_path {d}/temp/scgi;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{http_port};
        root {d}/www;
    }}
    server {{
        listen 127.0.0.1:{https_port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        root {d}/www;
    }}
}}
"""


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A real nginx of the machine, in the foreground, with its own
    configuration: static files of several sizes (seeded random contents)
    over HTTP and HTTPS (a trustme certificate).  Yields the configuration
    for tests/httpx_unchanged.py."""
    binary = nginx_binary()
    d = tmp_path / "nginx"
    (d / "www").mkdir(parents=True)
    (d / "temp").mkdir()
    rng = random.Random(15)
    files: dict[str, tuple[int, str]] = {}
    for size in NGINX_SIZES:
        data = rng.randbytes(size)
        name = f"file-{size}.bin"
        (d / "www" / name).write_bytes(data)
        files[name] = (size, hashlib.sha256(data).hexdigest())
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    (d / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    http_port, https_port = free_port(), free_port()
    # as root, nginx's worker would switch to an unprivileged user that cannot
    # read pytest's private temporary directory
    user = "user root;" if os.geteuid() == 0 else ""
    conf = NGINX_CONF.format(d=d, user=user, http_port=http_port, https_port=https_port)
    (d / "nginx.conf").write_text(conf)
    process = subprocess.Popen(
        [binary, "-p", str(d), "-c", str(d / "nginx.conf"), "-e", str(d / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        for port in (http_port, https_port):
            while True:
                if process.poll() is not None:
                    assert process.stderr is not None
                    pytest.fail(
                        f"nginx exited with {process.returncode}: "
                        f"{process.stderr.read().decode()}{(d / 'error.log').read_text()}"
                    )
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"nginx does not listen on {port}")
                    time.sleep(0.05)
        yield {
            "nginx_http": f"http://127.0.0.1:{http_port}",
            "nginx_https": f"https://127.0.0.1:{https_port}",
            "files": files,
            "ca": str(d / "ca.pem"),
            "cert": str(d / "cert.pem"),
            "key": str(d / "key.pem"),
        }
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful shutdown
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


#: the module of the stream class under httpx's connections, per backend: on
#: iocp the engine's streams (httpcore's AnyIO code, through the adapter), on
#: asyncio AnyIO's, on trio Trio's own (httpcore's TrioBackend, as before)
STREAM_MODULES = {
    "iocp": ["anyio_iocp._streams.sockets"],
    "asyncio": ["anyio._backends._asyncio"],
    "trio": ["trio"],
}


@pytest.mark.parametrize("engine", BASE_ENGINES)
def test_unchanged_httpx_on_nginx_and_h11_then_asyncio_and_trio(
    nginx: dict[str, Any], tmp_path: Path, engine: str
) -> None:
    """The issue's done-when: no enable_for, no import of anyio_iocp."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(nginx))
    backends = ("iocp", "asyncio", "trio")
    run = subprocess.run(
        [sys.executable, str(HERE / "httpx_unchanged.py"), str(config), *backends],
        capture_output=True,
        text=True,
        timeout=240,
        env=subprocess_env(ANYIO_IOCP_ENGINE=engine),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert lines[0] == {"anyio_iocp_imported": False}
    assert len(lines) == 1 + len(backends)
    files = len(nginx["files"])
    for backend, result in zip(backends, lines[1:], strict=True):
        assert result == {
            "library": backend,
            "nginx_checked": ROUNDS * 2 * files,  # every file, both schemes, each round
            "h11_checked": 2 * H11_REQUESTS,  # HTTP and HTTPS
            "h11_served": 2 * H11_REQUESTS,
            "stream_modules": STREAM_MODULES[backend],  # on iocp: the engine's streams
        }, backend


@pytest.mark.parametrize(
    ("how", "argv", "env"),
    [
        ("default", [], {}),
        ("env-off", [], {ADAPTERS_ENV: "0"}),
        ("option-off", ["off"], {}),
        ("option-off-wins-over-env-on", ["off"], {ADAPTERS_ENV: "1"}),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_library_imported_inside_the_run(how: str, argv: list[str], env: dict[str, str]) -> None:
    run = subprocess.run(
        [sys.executable, str(HERE / "late_import.py"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(**env),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert result["imported_before"] == []  # imported only inside the run
    if how == "default":
        assert result == {
            "imported_before": [],
            "httpx": "ok",
            "asgi_lifespan": "ok",
            "asyncer": "ok",
        }
    else:
        assert result == {
            "imported_before": [],
            "httpx": f"RuntimeError: {REFUSAL}",
            "asgi_lifespan": "NotImplementedError: Unsupported async library: iocp",
            "asyncer": (
                "AttributeError: module 'anyio_iocp._face.backend' has no attribute 'TaskGroup'"
            ),
        }


# -- the switch, in this process -------------------------------------------------


@pytest.fixture
def no_explicit_adapters(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No library enabled with enable_for, and no $ANYIO_IOCP_ADAPTERS, for
    the test; then the explicit state from before."""
    monkeypatch.delenv(ADAPTERS_ENV, raising=False)
    with explicit_adapters_cleared():
        yield


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port of 127.0.0.1 bound but not listening: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def try_httpx(port: int, library: Any = httpx, **options: Any) -> str:
    """'adapted' if httpx (or httpx2) got as far as connecting, else its refusal."""

    async def request() -> str:
        try:
            async with library.AsyncClient() as client:
                await client.get(f"http://127.0.0.1:{port}/")
        except library.ConnectError:
            return "adapted"
        except RuntimeError as exc:
            return str(exc)
        return "answered"

    return anyio.run(request, backend="iocp", backend_options=options)


def test_httpx2_adapted_by_default_and_off_by_the_switch(
    no_explicit_adapters: None, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx2 / httpcore2 (forks of httpx / httpcore that mcp depends on) make
    # the same check in the same functions
    assert try_httpx(closed_port, httpx2) == "adapted"
    assert try_httpx(closed_port, httpx2, adapters=False) == REFUSAL
    monkeypatch.setenv(ADAPTERS_ENV, "0")
    assert try_httpx(closed_port, httpx2) == REFUSAL


@pytest.mark.anyio
@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_httpx2_keep_alive_to_h11_server(engine_name: str, tls: bool) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    stats = Stats()
    modules: set[str] = set()
    async with anyio.create_task_group() as tg:
        port = await tg.start(serve, stats, server_context if tls else None)
        base = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        async with httpx2.AsyncClient(verify=client_context) as client:
            for i in range(50):
                response = await client.get(f"{base}/echo/x{i}")
                assert response.status_code == 200
                assert response.content == echo_body(f"x{i}")
                stream: Any = response.extensions["network_stream"]._stream
                stream = getattr(stream, "transport_stream", stream)
                modules.add(type(stream).__name__)
                assert stream.engine_info.name == engine_name
        tg.cancel_scope.cancel()
    assert stats.requests == 50
    assert stats.connections == 1  # keep-alive
    assert modules == {"EngineSocketStream"}


def wrappers_in_place() -> bool:
    from httpcore import _synchronization
    from httpcore._backends import auto
    from httpx._transports import asgi

    return all(
        function in _libcompat._originals
        for function in (
            _synchronization.current_async_library,
            vars(auto)["current_async_library"],
            asgi.create_event,
        )
    )


@pytest.mark.parametrize("switch", ["option", "env"])
def test_off_switch_brings_the_refusal_back(
    no_explicit_adapters: None, closed_port: int, switch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert try_httpx(closed_port) == "adapted"  # on by default
    assert wrappers_in_place()
    if switch == "option":
        assert try_httpx(closed_port, adapters=False) == REFUSAL
    else:
        monkeypatch.setenv(ADAPTERS_ENV, "0")
        assert try_httpx(closed_port) == REFUSAL
        monkeypatch.setenv(ADAPTERS_ENV, "1")
        assert try_httpx(closed_port) == "adapted"
    # the wrappers stayed in place: the switch acts per run
    assert wrappers_in_place()
    monkeypatch.delenv(ADAPTERS_ENV, raising=False)
    assert try_httpx(closed_port) == "adapted"


def test_option_wins_over_the_environment(
    no_explicit_adapters: None, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ADAPTERS_ENV, "0")
    assert try_httpx(closed_port, adapters=True) == "adapted"
    monkeypatch.setenv(ADAPTERS_ENV, "1")
    assert try_httpx(closed_port, adapters=False) == REFUSAL


def test_off_switch_leaves_an_explicit_enable(
    no_explicit_adapters: None, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    anyio_iocp.enable_for("httpx")
    try:
        monkeypatch.setenv(ADAPTERS_ENV, "0")
        assert try_httpx(closed_port) == "adapted"
        assert try_httpx(closed_port, adapters=False) == "adapted"

        async def adapted_now() -> tuple[str, ...]:
            return anyio_iocp.enabled_libraries()

        assert anyio.run(adapted_now, backend="iocp") == ("httpcore", "httpx")
        monkeypatch.delenv(ADAPTERS_ENV)
        # a run with adapters on adapts every library imported here
        assert anyio.run(adapted_now, backend="iocp") == _libcompat.SUPPORTED_LIBRARIES
    finally:
        anyio_iocp.disable_for("httpx")
        anyio_iocp.disable_for("httpcore")
    assert anyio_iocp.enabled_libraries() == ()


@pytest.mark.parametrize("value", ["no", 0, 1, "False"])
def test_bad_adapters_option(value: object) -> None:
    async def main() -> None:
        pass

    with pytest.raises(ValueError, match=r"'adapters' must be True or False, not "):
        anyio.run(main, backend="iocp", backend_options={"adapters": value})


@pytest.mark.parametrize("value", ["yes", "2", "off", "true"])
def test_bad_adapters_environment(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        pass

    monkeypatch.setenv(ADAPTERS_ENV, value)
    with pytest.raises(
        ValueError, match=rf"ANYIO_IOCP_ADAPTERS='{value}': expected one of '0', '1'"
    ):
        anyio.run(main, backend="iocp")


def test_unknown_option_names_adapters() -> None:
    async def main() -> None:
        pass

    with pytest.raises(ValueError, match=r"unknown backend option 'adapter'.*'adapters'"):
        anyio.run(main, backend="iocp", backend_options={"adapter": False})


# -- asyncio and trio unchanged ----------------------------------------------------


def answers() -> dict[str, object]:
    """What each wrapped function gives in the current run."""
    from asgi_lifespan import _concurrency
    from asyncer import _main
    from httpcore import _synchronization
    from httpx._transports import asgi

    return {
        "httpcore": _synchronization.current_async_library(),
        "httpx": type(asgi.create_event()),
        "asgi_lifespan": type(_concurrency.detect_concurrency_backend()).__module__,
        "asyncer": _main.get_asynclib().__name__,
    }


def test_asyncio_and_trio_unchanged(no_explicit_adapters: None) -> None:
    async def run_answers() -> dict[str, object]:
        return answers()

    on_iocp = anyio.run(run_answers, backend="iocp")  # puts the wrappers in place
    assert wrappers_in_place()
    event_class = on_iocp.pop("httpx")
    assert isinstance(event_class, type)
    assert issubclass(event_class, anyio.Event)  # AnyIO's, for the run's backend
    assert on_iocp == {
        "httpcore": "asyncio",
        "asgi_lifespan": "asgi_lifespan._concurrency.trio",
        "asyncer": "anyio._backends._trio",
    }
    expected = {
        "asyncio": {
            "httpcore": "asyncio",
            "httpx": asyncio.Event,
            "asgi_lifespan": "asgi_lifespan._concurrency.asyncio",
            "asyncer": "anyio._backends._asyncio",
        },
        "trio": {
            "httpcore": "trio",
            "httpx": trio.Event,
            "asgi_lifespan": "asgi_lifespan._concurrency.trio",
            "asyncer": "anyio._backends._trio",
        },
    }
    for backend, answer in expected.items():
        assert anyio.run(run_answers, backend=backend) == answer, backend
    # and with the originals back, the same answers
    for library in _libcompat.SUPPORTED_LIBRARIES:
        anyio_iocp.disable_for(library)
    assert not wrappers_in_place()
    for backend, answer in expected.items():
        assert anyio.run(run_answers, backend=backend) == answer, backend


# -- asgi-lifespan and asyncer on iocp -----------------------------------------------


@pytest.mark.anyio
async def test_asgi_lifespan_with_starlette() -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = Starlette(lifespan=lifespan)
    async with LifespanManager(app):
        assert events == ["startup"]
    assert events == ["startup", "shutdown"]


@pytest.mark.anyio
async def test_asyncer_task_group_and_asyncify() -> None:
    async def square(x: int) -> int:
        await anyio.sleep(0.001 * x)
        return x * x

    async with asyncer.create_task_group() as tg:
        values = [tg.soonify(square)(i) for i in range(10)]
    assert [value.value for value in values] == [i * i for i in range(10)]

    def total(numbers: list[int]) -> int:
        return sum(numbers)

    assert await asyncer.asyncify(total)([1, 2, 3]) == 6


# -- the import hook and the patching, on modules of our own --------------------------


def test_import_hook_wraps_only_the_named_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from anyio_iocp._face.adapter_hook import AdapterFinder

    (tmp_path / "hooked_target.py").write_text("def choose():\n    return 'own'\n")
    (tmp_path / "hooked_other.py").write_text("VALUE = 1\n")
    executed: list[tuple[str, bool]] = []

    def after_exec(name: str) -> None:
        # right after the module executed, before the importer gets it
        executed.append((name, callable(getattr(sys.modules[name], "choose", None))))

    finder = AdapterFinder({"hooked_target"}, after_exec)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    for name in ("hooked_target", "hooked_other"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import hooked_other  # type: ignore[import-not-found]
    import hooked_target  # type: ignore[import-not-found]

    assert executed == [("hooked_target", True)]
    assert hooked_target.choose() == "own"
    assert type(hooked_target.__spec__.loader).__name__ == "_PatchingLoader"
    assert hooked_target.__spec__.loader.get_source("hooked_target").startswith("def choose")
    assert type(hooked_other.__spec__.loader).__name__ == "SourceFileLoader"


def test_hook_installed_once() -> None:
    from anyio_iocp._face.adapter_hook import AdapterFinder

    async def main() -> None:
        pass

    for _ in range(3):
        anyio.run(main, backend="iocp")
    assert sum(isinstance(finder, AdapterFinder) for finder in sys.meta_path) == 1


def test_a_version_without_the_function_is_skipped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def wrap(original: Any, active: Any) -> Any:
        return lambda: "adapted" if active() else original()

    patch = _libcompat._Patch("fake_lib.mod", "choose", wrap)
    monkeypatch.setitem(_libcompat._ADAPTERS, "fake_lib", (patch,))
    module = types.ModuleType("fake_lib.mod")
    monkeypatch.setitem(sys.modules, "fake_lib.mod", module)
    with pytest.warns(
        RuntimeWarning, match=r"cannot adapt 'fake_lib': fake_lib.mod.choose is missing"
    ):
        _libcompat.patch_module("fake_lib.mod")
    assert ("fake_lib.mod", "choose") not in _libcompat._in_place
    with pytest.raises(RuntimeError, match=r"fake_lib.mod.choose is missing in the installed"):
        anyio_iocp.enable_for("fake_lib")
    assert anyio_iocp.enabled_libraries() == ()

    def choose() -> str:
        return "own"

    module.choose = choose  # type: ignore[attr-defined]
    try:
        _libcompat.patch_module("fake_lib.mod")
        assert module.choose is not choose
        assert module.choose() == "own"  # not in a run

        async def in_run() -> str:
            return str(module.choose())

        assert anyio.run(in_run, backend="iocp") == "adapted"
        assert anyio.run(in_run, backend="iocp", backend_options={"adapters": False}) == "own"
        assert anyio.run(in_run, backend="trio") == "own"

        # a reload gives the module fresh functions: they are patched again
        def choose_reloaded() -> str:
            return "own, reloaded"

        module.choose = choose_reloaded  # type: ignore[attr-defined]
        _libcompat.patch_module("fake_lib.mod")
        assert anyio.run(in_run, backend="iocp") == "adapted"
        assert anyio.run(in_run, backend="trio") == "own, reloaded"
        choose = choose_reloaded
    finally:
        anyio_iocp.disable_for("fake_lib")
    assert module.choose is choose


def test_a_missing_function_is_reported_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run start patches the imported modules again: a function the
    installed version lacks is reported the first time only."""
    patch = _libcompat._Patch("fake_once.mod", "choose", lambda original, active: original)
    monkeypatch.setitem(_libcompat._ADAPTERS, "fake_once", (patch,))
    monkeypatch.setitem(sys.modules, "fake_once.mod", types.ModuleType("fake_once.mod"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            _libcompat.patch_module("fake_once.mod")
    assert [str(w.message) for w in caught] == [
        "anyio_iocp: cannot adapt 'fake_once': fake_once.mod.choose is missing in the "
        "installed version; see docs/compat.md"
    ]


def write_module(directory: Path, name: str, body: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(body))


def test_a_failing_adapter_does_not_fail_the_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever goes wrong while a library is adapted (here: a warning made an
    error, as ``-W error`` does), its import succeeds and the error is logged."""
    from anyio_iocp._face.adapter_hook import AdapterFinder

    def failing(name: str) -> None:
        raise RuntimeWarning(f"cannot adapt {name}")

    write_module(tmp_path, "fails_to_adapt", "VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = AdapterFinder({"fails_to_adapt"}, failing)
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    monkeypatch.delitem(sys.modules, "fails_to_adapt", raising=False)
    module = importlib.import_module("fails_to_adapt")
    assert module.VALUE == 42
    assert sys.modules["fails_to_adapt"] is module
    assert "could not adapt fails_to_adapt after its import" in caplog.text


def test_enable_for_while_another_thread_imports_the_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread imports a library (slowly) while another calls enable_for on
    it: the import hook patches the module as it finishes, enable_for waits
    for the import, and neither waits for the other forever."""
    from anyio_iocp._face.adapter_hook import AdapterFinder

    write_module(
        tmp_path,
        "slow_lib",
        """
        import time
        time.sleep(0.5)

        def choose():
            return "own"
        """,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    patch = _libcompat._Patch(
        "slow_lib", "choose", lambda original, active: lambda: "adapted" if active() else original()
    )
    monkeypatch.setitem(_libcompat._ADAPTERS, "slow_lib", (patch,))
    finder = AdapterFinder({"slow_lib"}, _libcompat.patch_module)
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    monkeypatch.delitem(sys.modules, "slow_lib", raising=False)
    importer = threading.Thread(target=importlib.import_module, args=("slow_lib",), daemon=True)
    importer.start()
    time.sleep(0.1)  # the import is under way, holding the module's import lock
    enabler = threading.Thread(target=anyio_iocp.enable_for, args=("slow_lib",), daemon=True)
    enabler.start()
    try:
        importer.join(10)
        enabler.join(10)
        assert not importer.is_alive() and not enabler.is_alive(), "deadlock"
        module = sys.modules["slow_lib"]
        assert module.choose() == "own"  # wrapped, and outside a run the library's own

        async def in_run() -> str:
            return str(module.choose())

        assert anyio.run(in_run, backend="iocp") == "adapted"
    finally:
        anyio_iocp.disable_for("slow_lib")
