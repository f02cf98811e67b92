#!/usr/bin/env bash
# Set up (see setup.sh) and run the failover demo: two local clusters, the
# gateway associated with both, and a curl loop while cluster A goes away.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/gateway demo "$@"
