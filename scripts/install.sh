#!/usr/bin/env bash
# Installs what the backend needs into .venv; with --tests also what the test suite needs:
# redis-server and chromium from Debian (as root), and Label Studio in its own .lsvenv.
# Re-runs are cheap: existing virtualenvs are reused when they already match.
set -euo pipefail
cd "$(dirname "$0")/.."

LABEL_STUDIO_VERSION=1.23.2
with_tests=false
[ "${1:-}" = "--tests" ] && with_tests=true

if $with_tests; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # redis-server: the RQ job queue and shared embedding cache in the active-learning tests.
    # chromium: the browser tests drive the real labeling page (Playwright uses this binary; no download).
    apt-get install -y --no-install-recommends python3 python3-venv redis-server chromium
fi

# The backend's environment. torch/torchvision resolve through the machine's pip configuration.
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -r requirements.txt

if $with_tests; then
    # Label Studio gets its own environment: its dependencies clash with the backend's.
    if ! .lsvenv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('label-studio') != '$LABEL_STUDIO_VERSION')" 2>/dev/null; then
        rm -rf .lsvenv
        python3 -m venv .lsvenv
        .lsvenv/bin/pip install -q "label-studio==$LABEL_STUDIO_VERSION"
    fi
fi
