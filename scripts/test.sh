#!/usr/bin/env bash
# Set up (see setup.sh) and run every test.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# The dashboard test drives a real headless Chromium (Debian's chromium + chromium-driver).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    export GATEWAY_APT_EXTRA="${GATEWAY_APT_EXTRA:-} chromium chromium-driver"
fi
# The Grafana dashboard test runs Debian's Prometheus against a gateway.
if ! command -v prometheus >/dev/null; then
    export GATEWAY_APT_EXTRA="${GATEWAY_APT_EXTRA:-} prometheus"
fi
bash scripts/setup.sh
# -rs: the reason of every skipped test is printed (a missing chromium, say).
exec .venv/bin/python -m pytest -q -rs "$@"
