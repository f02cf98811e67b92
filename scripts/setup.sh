#!/usr/bin/env bash
# Prepare this checkout on a fresh machine: OS packages, a virtualenv in .venv,
# and the gateway installed in editable mode (which compiles _speedups/ in place).
# Safe to run again: the build is redone only when its inputs changed.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_missing=()
command -v curl >/dev/null || apt_missing+=(curl)
command -v openssl >/dev/null || apt_missing+=(openssl)
command -v gcc >/dev/null || apt_missing+=(gcc)
python3 -c "import venv, ensurepip" 2>/dev/null || apt_missing+=(python3-venv)
for extra in ${GATEWAY_APT_EXTRA:-}; do apt_missing+=("$extra"); done
if ((${#apt_missing[@]})); then
    echo "setup: installing OS packages: ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.gateway-build
inputs=$(cat pyproject.toml setup.py _speedups/*.pyx _speedups/*.pxd | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$inputs" ] || ! .venv/bin/python -c "import _speedups.proxy" 2>/dev/null; then
    echo "setup: installing Python dependencies and compiling the hot path (about a minute)"
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -v "is ignored" || true
    .venv/bin/python -c "import _speedups.proxy, gateway.app"   # fails loudly if the build did not work
    echo "$inputs" > "$stamp"
fi
