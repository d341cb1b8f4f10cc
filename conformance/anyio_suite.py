"""Run AnyIO's own test suite against the "iocp" backend.

Usage (with the interpreter of the environment where anyio and anyio-iocp are
installed; run it from anywhere, the working directory does not matter)::

    .venv/bin/python conformance/anyio_suite.py            # everything
    .venv/bin/python conformance/anyio_suite.py -k tcp     # extra args go to pytest
    bash scripts/wine_conformance.sh                       # the same under Wine (--wine)

With ``--wine`` (run by ``scripts/wine_conformance.sh`` inside the tree that
``scripts/wine_test.sh`` prepares) pytest runs under Wine with Windows Python,
over trio and the iocp engines ``iocp`` and ``readiness``; what differs from
the Linux run (the wheels, the paths, the command) is in ``under_wine.py``.

Steps:

1. ``pip download --no-deps --no-binary :all: anyio==<installed version>`` into
   ``conformance/.cache/sdist`` and unpack the sdist's ``tests/`` and
   ``pyproject.toml`` (AnyIO's pytest configuration) into
   ``conformance/.cache/anyio-<version>``, fresh on every run, unmodified.
2. Create ``conformance/.cache/venv``, an *overlay* virtual environment: its
   ``site-packages`` comes first, then (through a ``.pth`` file) the
   ``site-packages`` of the interpreter running this script, whose own ``.pth``
   files (``anyio_iocp.pth``) are processed as usual.  AnyIO's test dependencies
   go into the overlay, so the project's environment is not changed.  Those
   that cannot be installed here are skipped and listed.
3. Run pytest on the tests with ``conformance/plugin.py``, which parametrises
   ``anyio_backend`` over trio (the reference) and both iocp engines, and applies
   the deselections listed in :data:`DESELECT`, each with its reason.  AnyIO's
   socket tests use ``"localhost"`` for their ipv6 variants too: where
   ``/etc/hosts`` lacks ``::1 localhost``, pytest runs in a private mount namespace
   with a copy that has it (see :func:`ipv6_localhost_wrapper`).
4. Rerun once, all three backend variants, every test where an iocp engine failed
   and trio passed or failed, to tell flaky failures from real ones.
5. Print the counts per backend, how many socket objects (streams, listeners,
   datagram sockets) each backend param created through which engine (a check
   that the iocp variants really ran on the engines), and the tests that pass
   on trio but fail on an iocp engine.
   Everything is saved under ``conformance/.cache/results``:
   ``junit-*.xml`` (pytest's junit), ``outcomes-*.jsonl`` (one line per test, from
   the plugin), ``pytest-*.log`` and ``summary.json``.

Exit status: 0 when no test passes on trio and fails on iocp (flaky ones aside),
1 when some do, 2 when the run itself could not be made.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import threading
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = HERE / ".cache"

REFERENCE = "trio"
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")
FAILING = ("failed", "error", "xpassed")

#: Tests deselected by name (node id without parameters, or a class), with the reason.
#: Beside these, plugin.py deselects, with their reasons, every test that does not
#: request ``anyio_backend`` and every test that pins ``anyio_backend`` itself.
#: AnyIO's ``network`` marker is *not* used as such: it also marks TestTCPListener,
#: TestUDPSocket and TestConnectedUDPSocket, which use only localhost and are the
#: heart of what this suite checks for the iocp backend.
DESELECT: dict[str, str] = {
    "tests/test_sockets.py::test_getaddrinfo": (
        "needs the Internet: resolves the public names faß.de and fass.de through DNS"
    ),
    "tests/test_lazyimport.py::test_sourceless_install": (
        "needs the Internet: pip-installs AnyIO from source into a new venv (build "
        "dependencies from the index), and needs the sdist's src/ tree; it does not "
        "request anyio_backend either"
    ),
}

#: pytest's per-test timeout (seconds), overriding AnyIO's 20 s for a shared CPU.
DEFAULT_TIMEOUT = 60


@dataclass
class DepReport:
    installed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def log(message: str) -> None:
    print(f"[conformance] {message}", flush=True)


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, check=False, **kwargs)


# -- 1. the sdist ---------------------------------------------------------------


def fetch_sdist(cache: Path, version: str) -> Path:
    target = cache / "sdist"
    sdist = target / f"anyio-{version}.tar.gz"
    if sdist.exists():
        log(f"sdist cached: {sdist}")
        return sdist
    target.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"anyio=={version}",
        "-d",
        str(target),
    ]
    log("fetching: " + " ".join(cmd))
    proc = run(cmd, capture_output=True)
    if proc.returncode != 0 or not sdist.exists():
        sys.exit(f"pip download failed:\n{proc.stdout}\n{proc.stderr}")
    return sdist


def unpack(sdist: Path, dest: Path) -> Path:
    """Unpack ``tests/`` and ``pyproject.toml``; return the directory holding them."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        members = []
        for member in tar.getmembers():
            parts = member.name.split("/", 1)
            if len(parts) == 2 and (parts[1] == "pyproject.toml" or parts[1].startswith("tests/")):
                member.name = parts[1]
                members.append(member)
        tar.extractall(dest, members=members, filter="data")
    if not (dest / "tests" / "conftest.py").exists():
        sys.exit(f"{sdist} has no tests/conftest.py")
    return dest


# -- 2. the overlay environment and the test dependencies --------------------------


def overlay_python(venv: Path) -> Path:
    if not (venv / "bin" / "python").exists():
        log(f"creating overlay venv {venv}")
        proc = run([sys.executable, "-m", "venv", str(venv)], capture_output=True)
        if proc.returncode != 0:
            sys.exit(f"venv creation failed:\n{proc.stderr}")
    python = venv / "bin" / "python"
    proc = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
    )
    overlay_site = Path(proc.stdout.strip())
    base_site = sysconfig.get_paths()["purelib"]
    (overlay_site / "_conformance_overlay.pth").write_text(
        f"import site; site.addsitedir({base_site!r})\n"
    )
    return python


def test_requirements(
    pyproject: Path, markers: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """AnyIO's test requirements that apply here (or to the platform whose
    environment ``markers`` gives), and those whose marker excludes them."""
    data = tomllib.loads(pyproject.read_text())
    groups: dict[str, list[Any]] = data.get("dependency-groups", {})

    def expand(name: str) -> list[str]:
        out: list[str] = []
        for entry in groups.get(name, []):
            if isinstance(entry, dict) and "include-group" in entry:
                out.extend(expand(entry["include-group"]))
            elif isinstance(entry, str):
                out.append(" ".join(entry.split()))
        return out

    raw = (
        expand("test")
        if "test" in groups
        else (data.get("project", {}).get("optional-dependencies", {}).get("test", []))
    )
    wanted: list[str] = []
    excluded: dict[str, str] = {}
    for spec in raw:
        try:
            req = Requirement(spec)
        except InvalidRequirement as exc:
            excluded[spec] = f"unparsable ({exc})"
            continue
        if req.marker is not None and not req.marker.evaluate(markers):
            excluded[str(req)] = "its environment marker excludes this platform"
            continue
        wanted.append(str(req))
    if not any(Requirement(r).name == "pytest-timeout" for r in wanted):
        wanted.append("pytest-timeout")
    return wanted, excluded


def pip_each(pip: list[str], wanted: list[str], report: DepReport, failure: str) -> None:
    """Run ``pip`` for each requirement alone, so that one that fails is
    recorded in ``report`` (with pip's last line) and the others still go."""
    for spec in wanted:
        proc = run([*pip, spec], capture_output=True, timeout=600)
        if proc.returncode == 0:
            report.installed.append(spec)
        else:
            last = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            report.skipped[spec] = f"{failure}: {last}"


def log_skipped(report: DepReport) -> None:
    for spec, why in report.skipped.items():
        log(f"test dependency skipped: {spec}: {why}")


def install_deps(python: Path, pyproject: Path, cache: Path) -> DepReport:
    wanted, excluded = test_requirements(pyproject)
    report = DepReport(skipped=dict(excluded))
    # Never let a dependency replace what is under test.
    constraints = cache / "constraints.txt"
    pins = [f"{name}=={metadata.version(name)}" for name in ("anyio", "trio", "pytest")]
    constraints.write_text("\n".join(pins) + "\n")
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    pip_each([*pip, "-c", str(constraints)], wanted, report, "not installable here")
    log(f"test dependencies present: {', '.join(report.installed)}")
    log_skipped(report)
    return report


# -- 3./4. pytest -----------------------------------------------------------------------


@dataclass
class Target:
    """Where pytest runs: the command that starts its Python, and how that
    Python spells this machine's paths (Windows Python under Wine: ``Z:``)."""

    python: list[str]
    path: Callable[[Path], str] = str
    pathsep: str = os.pathsep
    #: more entries for PYTHONPATH (after this directory, for the plugin)
    pythonpath: list[Path] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: the iocp engines beside trio (plugin.py's CONFORMANCE_ENGINES)
    engines: str = "io_uring,readiness,io_uring+strict"
    #: ends what a killed run may leave behind (Wine: the prefix's processes)
    cleanup: Callable[[], object] | None = None


def run_pytest(
    target: Target,
    anyio_dir: Path,
    results: Path,
    label: str,
    timeout: int,
    extra: list[str],
    only: list[str] | None,
    wall_limit: float,
) -> list[dict[str, Any]]:
    config: dict[str, Any] = {"deselect": DESELECT}
    if only is not None:
        config["only"] = only
    config_path = results / f"config-{label}.json"
    config_path.write_text(json.dumps(config, indent=1))
    outcomes = results / f"outcomes-{label}.jsonl"
    outcomes.unlink(missing_ok=True)
    env = dict(os.environ)
    env.pop("ANYIO_IOCP_ENGINE", None)  # the engine comes from the backend params
    env.pop("PYTHONPATH", None)
    env["PYTHONPATH"] = target.pathsep.join(target.path(p) for p in [HERE, *target.pythonpath])
    env["CONFORMANCE_CONFIG"] = target.path(config_path)
    env["CONFORMANCE_REPORT"] = target.path(outcomes)
    env["CONFORMANCE_ENGINES"] = target.engines
    env.update(target.env)
    # a path given first (tests/test_sockets.py) replaces the whole tests/
    paths = [] if extra and not extra[0].startswith("-") else ["tests"]
    cmd = [
        *target.python,
        "-m",
        "pytest",
        *paths,
        "-p",
        "plugin",
        "-p",
        "no:cacheprovider",
        f"--timeout={timeout}",
        f"--junitxml={target.path(results / f'junit-{label}.xml')}",
        "-q",
        "--tb=short",
        *extra,
    ]
    log(f"pytest ({label}): {' '.join(cmd)}  [cwd {anyio_dir}]")
    started = time.monotonic()
    # stdin from /dev/null and the output piped, not a file: a Wine process
    # whose output goes straight to a file dies at start
    with open(results / f"pytest-{label}.log", "wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=anyio_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert proc.stdout is not None
        copier = threading.Thread(target=shutil.copyfileobj, args=(proc.stdout, out), daemon=True)
        copier.start()
        try:
            proc.wait(timeout=wall_limit)
        except subprocess.TimeoutExpired:
            log(f"pytest ({label}) over its {wall_limit:.0f}s limit: stopped, partial results")
            proc.kill()
            proc.wait()
            if target.cleanup is not None:
                target.cleanup()
        copier.join(timeout=10)
    log(f"pytest ({label}) exit {proc.returncode} after {time.monotonic() - started:.0f}s")
    lines = outcomes.read_text().splitlines() if outcomes.exists() else []
    return [json.loads(line) for line in lines]


def ipv6_localhost_wrapper(cache: Path) -> list[str]:
    """A command prefix giving the tests an ``/etc/hosts`` where localhost is also ``::1``.

    AnyIO's socket tests bind and connect to ``"localhost"`` for their ipv6 variants;
    where ``/etc/hosts`` maps localhost to 127.0.0.1 only, every one of those errors
    at setup on every backend, and the engines' IPv6 paths go untested.  Rather than
    touch the machine's ``/etc/hosts``, the pytest process runs in a private mount
    namespace (``unshare -m``, root only) with a copy bind-mounted over it that adds
    ``::1 localhost`` (as Debian's default file has).  Returns ``[]`` when not needed
    or not possible.
    """
    hosts = Path("/etc/hosts")
    try:
        current = hosts.read_text()
    except OSError:
        return []
    has_v6 = any(
        line.split()[:1] == ["::1"] and "localhost" in line.split()[1:]
        for line in current.splitlines()
    )
    if has_v6 or os.geteuid() != 0 or shutil.which("unshare") is None:
        return []
    copy = cache / "hosts"
    copy.write_text(current.rstrip("\n") + "\n::1 localhost\n")
    probe = run(
        ["unshare", "-m", "sh", "-c", f"mount --bind {copy} /etc/hosts && getent hosts ::1"],
        capture_output=True,
    )
    if probe.returncode != 0:
        log(f"no private /etc/hosts possible ({probe.stderr.strip()}): ipv6 tests will error")
        return []
    log("ipv6: tests run with a private /etc/hosts that adds '::1 localhost' (unshare -m)")
    return ["unshare", "-m", "sh", "-c", f'mount --bind {copy} /etc/hosts && exec "$@"', "sh"]


# -- 5. the report ----------------------------------------------------------------------


def summarise(first: list[dict[str, Any]], rerun: list[dict[str, Any]] | None) -> dict[str, Any]:
    tests = [r for r in first if r["type"] == "test"]
    deselected = [r for r in first if r["type"] == "deselected"]
    # trio first, then the iocp engines in the order they ran
    counts: dict[str, Counter[str]] = {REFERENCE: Counter()}
    by_key: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in tests:
        counts.setdefault(r["backend"], Counter())[r["outcome"] or "error"] += 1
        by_key[r["key"]][r["backend"]] = r
    usage: dict[str, Counter[str]] = defaultdict(Counter)
    for r in tests:
        usage[r["backend"]].update(r.get("engine_objects", {}))
    again = {r["nodeid"]: r["outcome"] for r in rerun or [] if r["type"] == "test"}
    iocp_ids = [b for b in counts if b != REFERENCE]

    regressions: list[dict[str, Any]] = []
    #: iocp failures where the trio variant did not pass either (xfail, skip, failure)
    other_failures: list[str] = []
    trio_pass_iocp_skip: list[str] = []
    for variants in by_key.values():
        ref = variants.get(REFERENCE)
        if ref is None:
            continue
        ref_pass = ref["outcome"] == "passed" or again.get(ref["nodeid"]) == "passed"
        if not ref_pass:
            other_failures.extend(
                f"{v['nodeid']}: {v['outcome']} (trio: {ref['outcome']})"
                for engine, v in variants.items()
                if engine in iocp_ids and v["outcome"] in FAILING
            )
            continue
        failing: dict[str, dict[str, Any]] = {}
        for engine in iocp_ids:
            variant = variants.get(engine)
            if variant is None:
                continue
            if variant["outcome"] in FAILING:
                second = again.get(variant["nodeid"])
                kind = (
                    "not rerun"
                    if second is None
                    else ("real" if second in FAILING else f"flaky (rerun: {second})")
                )
                failing[engine] = {
                    "nodeid": variant["nodeid"],
                    "outcome": variant["outcome"],
                    "classification": kind,
                    "longrepr": variant["longrepr"],
                }
            elif variant["outcome"] == "skipped":
                trio_pass_iocp_skip.append(variant["nodeid"])
        if failing:
            regressions.append({"test": ref["nodeid"], "engines": failing})
    reasons = Counter(r["reason"] for r in deselected)
    return {
        "counts": {b: dict(c) for b, c in counts.items()},
        "engine_objects": {b: dict(usage.get(b, Counter())) for b in counts},
        "regressions": sorted(regressions, key=lambda r: r["test"]),
        "trio_pass_iocp_skip": sorted(trio_pass_iocp_skip),
        "iocp_fail_trio_not_pass": sorted(other_failures),
        "deselected": {"by_reason": dict(reasons), "tests": deselected},
    }


def print_report(summary: dict[str, Any], deps: DepReport | None) -> None:
    print()
    header = f"{'backend':<22}" + "".join(f"{o:>9}" for o in OUTCOMES) + f"{'total':>9}"
    print(header)
    print("-" * len(header))
    for backend, c in summary["counts"].items():
        print(
            f"{backend:<22}"
            + "".join(f"{c.get(o, 0):>9}" for o in OUTCOMES)
            + f"{sum(c.values()):>9}"
        )
    print(
        "\nSocket objects (streams, listeners, datagram sockets) created by anyio_iocp,"
        " by class:engine, per backend param:"
    )
    for backend, objects in summary["engine_objects"].items():
        text = ", ".join(f"{k}={v}" for k, v in sorted(objects.items())) or "none"
        print(f"  {backend:<22}{text}")
    print()
    regs = summary["regressions"]
    real = [
        r
        for r in regs
        if any(
            e["classification"] != "not rerun" and not e["classification"].startswith("flaky")
            for e in r["engines"].values()
        )
    ]
    print(f"PASS on trio, FAIL on iocp: {len(regs)} test(s), {len(real)} failing again on rerun")
    for r in regs:
        marks = ", ".join(
            f"{engine}: {e['outcome']} [{e['classification']}]"
            for engine, e in r["engines"].items()
        )
        print(f"  {r['test']}  ->  {marks}")
    if summary["trio_pass_iocp_skip"]:
        print(f"\nPASS on trio, SKIPPED on iocp: {len(summary['trio_pass_iocp_skip'])}")
        for nodeid in summary["trio_pass_iocp_skip"]:
            print(f"  {nodeid}")
    if summary["iocp_fail_trio_not_pass"]:
        print("\nFAIL on iocp where trio did not pass either (not counted above):")
        for line in summary["iocp_fail_trio_not_pass"]:
            print(f"  {line}")
    print("\nDeselected (count: reason):")
    for reason, n in summary["deselected"]["by_reason"].items():
        print(f"  {n:>5}: {reason}")
    if deps is not None and deps.skipped:
        print("\nAnyIO test dependencies not installed:")
        for spec, why in deps.skipped.items():
            print(f"  {spec}: {why}")


Prepared = tuple[Target, Path, Path, DepReport | None]


def prepare_linux(args: argparse.Namespace) -> Prepared:
    """This environment's Python, an overlay venv with AnyIO's test dependencies."""
    cache: Path = (args.cache_dir or DEFAULT_CACHE).resolve()
    results = cache / "results"
    results.mkdir(parents=True, exist_ok=True)
    version = metadata.version("anyio")
    log(
        f"AnyIO {version}, trio {metadata.version('trio')}, "
        f"anyio-iocp {metadata.version('anyio-iocp')}, python {sys.executable}"
    )
    anyio_dir = unpack(fetch_sdist(cache, version), cache / f"anyio-{version}")
    python = overlay_python(cache / "venv")
    deps = None if args.no_install else install_deps(python, anyio_dir / "pyproject.toml", cache)
    prefix = [] if args.no_ipv6_localhost else ipv6_localhost_wrapper(cache)
    return Target(python=[*prefix, str(python)]), anyio_dir, results, deps


def prepare_wine(args: argparse.Namespace) -> Prepared:
    """Windows Python under Wine (engines iocp and readiness), AnyIO's test
    dependencies as win_amd64 wheels; the cache beside the Wine prefix.  Wine
    resolves names in its client process with the host's resolver, so the
    private ``/etc/hosts`` works for it too."""
    import under_wine

    wine, python = under_wine.wine_paths()
    cache = (args.cache_dir or python.parent.parent / "conformance").resolve()
    results = cache / "results"
    results.mkdir(parents=True, exist_ok=True)
    version = under_wine.installed_version(python, "anyio")
    log(
        f"under Wine: AnyIO {version}, trio {under_wine.installed_version(python, 'trio')}, "
        f"python {python}"
    )
    anyio_dir = unpack(fetch_sdist(cache, version), cache / f"anyio-{version}")
    deps, site = under_wine.install_wheels(python, anyio_dir / "pyproject.toml", cache)
    prefix = [] if args.no_ipv6_localhost else ipv6_localhost_wrapper(cache)
    return under_wine.wine_target([*prefix, wine], python, site), anyio_dir, results, deps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help=f"default: {DEFAULT_CACHE} (--wine: conformance/ beside the Wine prefix)",
    )
    parser.add_argument(
        "--wine",
        action="store_true",
        help="run under Wine with Windows Python (from scripts/wine_conformance.sh)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=DEFAULT_TIMEOUT,
        help="per-test timeout in seconds (pytest-timeout)",
    )
    parser.add_argument(
        "--max-minutes", type=float, default=13.0, help="wall-clock limit of the main pytest run"
    )
    parser.add_argument(
        "--no-ipv6-localhost",
        action="store_true",
        help="do not give the tests a private /etc/hosts with '::1 localhost'",
    )
    parser.add_argument("--no-rerun", action="store_true", help="do not rerun failures")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="skip installing test dependencies (overlay venv must exist)",
    )
    args, extra = parser.parse_known_args()
    if extra[:1] == ["--"]:
        extra = extra[1:]

    if args.wine:
        target, anyio_dir, results, deps = prepare_wine(args)
    else:
        target, anyio_dir, results, deps = prepare_linux(args)
    first = run_pytest(
        target, anyio_dir, results, "run1", args.timeout, extra, None, args.max_minutes * 60
    )
    if not any(r["type"] == "test" for r in first):
        log(f"no test outcome recorded; see {results / 'pytest-run1.log'}")
        return 2
    rerun: list[dict[str, Any]] | None = None
    if not args.no_rerun:
        tests = [r for r in first if r["type"] == "test"]
        # Keys where an iocp engine failed and trio passed or failed (a failure of the
        # reference may be the flake); not where trio is xfailed or skipped, which
        # cannot make the list.
        iocp_failed = {
            r["key"] for r in tests if r["backend"] != REFERENCE and r["outcome"] in FAILING
        }
        ref_ran = {
            r["key"]
            for r in tests
            if r["backend"] == REFERENCE and r["outcome"] in ("passed", "failed", "error")
        }
        keys = iocp_failed & ref_ran
        nodeids = sorted(r["nodeid"] for r in tests if r["key"] in keys)
        if nodeids:
            log(f"rerunning {len(nodeids)} test(s) once (iocp failures and their trio variant)")
            rerun = run_pytest(
                target,
                anyio_dir,
                results,
                "rerun",
                args.timeout,
                [],
                nodeids,
                args.max_minutes * 60,
            )
    summary = summarise(first, rerun)
    summary["dependencies"] = (
        None if deps is None else {"installed": deps.installed, "skipped": deps.skipped}
    )
    (results / "summary.json").write_text(json.dumps(summary, indent=1))
    print_report(summary, deps)
    log(f"results saved under {results}")
    real = [
        r
        for r in summary["regressions"]
        if any(e["classification"] in ("real", "not rerun") for e in r["engines"].values())
    ]
    return 1 if real else 0


if __name__ == "__main__":
    sys.exit(main())
