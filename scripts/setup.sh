#!/usr/bin/env bash
# Prepare this checkout on a fresh machine: OS packages, a virtualenv in .venv,
# and the gateway installed in editable mode (which compiles _speedups/ in place).
# Safe to run again: the build is redone only when its inputs changed.
# Any failed step fails the script: a broken build must never leave an older one in the
# tree looking current (the import check below would pass on stale .so files).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_missing=()
command -v curl >/dev/null || apt_missing+=(curl)
command -v openssl >/dev/null || apt_missing+=(openssl)
command -v gcc >/dev/null || apt_missing+=(gcc)
# gcc alone does not bring the C library headers (libc6-dev is only a Recommends of gcc).
if command -v gcc >/dev/null && ! echo '#include <stdio.h>' | gcc -E -x c - >/dev/null 2>&1; then
    apt_missing+=(libc6-dev)
fi
python3 -c "import venv, ensurepip" 2>/dev/null || apt_missing+=(python3-venv)
# Python.h: Debian's python3 ships without it (python3-dev), and every extension needs it.
python3 -c "import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
    || apt_missing+=(python3-dev)
# nghttp2's headers: _speedups/h2.pyx links against Debian's libnghttp2 (HTTP/2 framing).
[ -f /usr/include/nghttp2/nghttp2.h ] || apt_missing+=(libnghttp2-dev)
# OpenSSL's headers: _speedups/tls.pyx links the libssl the ssl module uses.
[ -f /usr/include/openssl/ssl.h ] || apt_missing+=(libssl-dev)
# nghttp and h2load: HTTP/2 clients for the tests and bench/h2_load.py
command -v nghttp >/dev/null || apt_missing+=(nghttp2-client)
# nft and ip: the failover tests and bench/failover.py blackhole a zone in a network namespace
command -v nft >/dev/null || apt_missing+=(nftables)
command -v ip >/dev/null || apt_missing+=(iproute2)
# redis-server: the global rate limit's store; the tests start their own on a free port
command -v redis-server >/dev/null || apt_missing+=(redis-server)
for extra in ${GATEWAY_APT_EXTRA:-}; do apt_missing+=("$extra"); done
if ((${#apt_missing[@]})); then
    echo "setup: installing OS packages: ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

# Run a noisy command quietly: its output is shown (minus setuptools' "... is ignored"
# chatter) and its exit status is kept, so a failed install stops the script here.
quiet() {
    local out status=0
    out=$("$@" 2>&1) || status=$?
    # grep exits 1 when every line was filtered out: that is not a failure of "$@".
    printf '%s\n' "$out" | grep -v "is ignored" || true
    if ((status)); then
        echo "setup: failed (exit $status): $*" >&2
        exit "$status"
    fi
}

[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=.venv/.gateway-build
inputs=$(cat pyproject.toml setup.py _speedups/*.pyx _speedups/*.pxd | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$inputs" ] || ! .venv/bin/python -c "import _speedups.proxy" 2>/dev/null; then
    echo "setup: installing Python dependencies and compiling the hot path (about a minute)"
    quiet .venv/bin/python -m pip install -q --upgrade pip
    quiet .venv/bin/python -m pip install -q -e ".[test]"
    .venv/bin/python -c "import _speedups.proxy, gateway.app"   # fails loudly if the build did not work
    # Only now: the stamp says "these inputs were built", so it is written after a build that
    # succeeded and never otherwise (a failed one leaves the old stamp, and the next run rebuilds).
    echo "$inputs" > "$stamp"
fi
