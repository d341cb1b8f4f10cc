#!/usr/bin/env bash
# The Linux test suite (bash scripts/test.sh) on every CPython >= 3.12 found
# on this machine, each in a virtual environment of its own (.venv-3.12, ...).
# Looks in pyenv's versions (when pyenv is installed) and for python3.12,
# python3.13, python3.14 on PATH; one interpreter per minor version, the first
# found.  Says which were found and which were not.  Arguments go to pytest
# (e.g. tests/test_backend.py for a subset); --list only lists.  The version
# of python3 itself is left out: bash scripts/test.sh tests that one (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

MINORS=(12 13 14)
declare -A found=()   # "3.12" -> the interpreter's path
declare -A where=()   # "3.12" -> where it was found
notes=()

# CPython "X.Y" of an interpreter that runs (a pyenv shim of an inactive
# version does not), or nothing
cpython_version() {
    "$1" -c 'import sys; sys.implementation.name == "cpython" or sys.exit(1); print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

consider() {  # path, where it came from
    local version
    version="$(cpython_version "$1")"
    if [ -z "$version" ]; then
        notes+=("$2: does not run")
        return
    fi
    case "$version" in 3.1[2-9]|3.[2-9][0-9]) ;; *) return ;; esac
    if [ -n "${found[$version]:-}" ]; then
        notes+=("$2: Python $version, already found at ${found[$version]}")
        return
    fi
    found[$version]="$1"
    where[$version]="$2"
}

default="$(cpython_version python3)"
if [ -n "$default" ]; then
    found[$default]="(python3, tested by bash scripts/test.sh)"
fi

if command -v pyenv >/dev/null 2>&1; then
    root="$(pyenv root)"
    for v in $(pyenv versions --bare --skip-aliases 2>/dev/null || pyenv versions --bare); do
        # CPython releases only (3.12.1; not 3.13-dev, pypy3.10, miniconda3, system)
        [[ "$v" =~ ^3\.[0-9]+\.[0-9]+$ ]] || continue
        [ -x "$root/versions/$v/bin/python3" ] && consider "$root/versions/$v/bin/python3" "pyenv $v"
    done
else
    notes+=("pyenv: not installed")
fi
for minor in "${MINORS[@]}"; do
    if command -v "python3.$minor" >/dev/null 2>&1; then
        consider "$(command -v "python3.$minor")" "python3.$minor on PATH ($(command -v "python3.$minor"))"
    else
        notes+=("python3.$minor: not on PATH")
    fi
done

[ -n "$default" ] && unset "found[$default]"
versions=$(printf '%s\n' "${!found[@]}" | sort -V)
echo "== Pythons >= 3.12 found:"
for version in $versions; do
    echo "   $version: ${found[$version]} (${where[$version]})"
done
for minor in "${MINORS[@]}"; do
    if [ "$default" = "3.$minor" ]; then
        echo "   3.$minor: python3 itself (tested by bash scripts/test.sh)"
    elif [ -z "${found[3.$minor]:-}" ]; then
        echo "   3.$minor: not found"
    fi
done
for note in "${notes[@]}"; do
    echo "   ($note)"
done

[ "${1:-}" = --list ] && exit 0

for version in $versions; do
    echo "== the test suite on Python $version (${found[$version]}, .venv-$version)"
    ANYIO_IOCP_VENV=".venv-$version" ANYIO_IOCP_PYTHON="${found[$version]}" \
        bash scripts/test.sh "$@"
done
