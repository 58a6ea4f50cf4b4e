#!/usr/bin/env bash
# Installs what the backend needs into .venv; with --tests also what the test suite needs:
# redis-server, chromium and docker-compose from Debian (as root), the test packages, and Label
# Studio in its own .lsvenv. Re-runs are cheap: existing virtualenvs are reused when they already match.
#
# TORCH_INDEX_URL: an extra pip index for torch and torchvision, e.g. the CPU-only wheels
# (https://download.pytorch.org/whl/cpu, ~0.2 GB instead of ~4 GB of CUDA libraries from PyPI).
# Unset: they resolve through the machine's pip configuration like everything else.
set -euo pipefail
cd "$(dirname "$0")/.."

LABEL_STUDIO_VERSION=1.23.2
with_tests=false
[ "${1:-}" = "--tests" ] && with_tests=true

t0=$SECONDS
step() { echo "== install [$((SECONDS - t0)) s] $*"; }
# pip's own lines (Collecting, Downloading, Installing, Successfully installed) are the progress;
# packages already present stay quiet.
pip_install() { .venv/bin/pip install --progress-bar off "$@" | { grep -v '^Requirement already satisfied' || true; }; }

if $with_tests; then
    export DEBIAN_FRONTEND=noninteractive
    step "Debian packages: redis-server, chromium, docker-compose"
    apt-get update -q
    # redis-server: the RQ job queue and shared embedding cache in the active-learning tests.
    # chromium: the browser tests drive the real labeling page (Playwright uses this binary; no download).
    # docker-compose: validates docker-compose.yml (tests/docker).
    apt-get install -y -q --no-install-recommends python3 python3-venv redis-server chromium docker-compose
fi

# The backend's environment.
[ -x .venv/bin/python ] || { step "create .venv"; python3 -m venv .venv; }
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    step "torch and torchvision from $TORCH_INDEX_URL (extra index)"
    pip_install --extra-index-url "$TORCH_INDEX_URL" $(grep -E '^(torch|torchvision)==' requirements.txt)
fi
# sam2 (SAM 2.1) is published only as source and declares torch a build requirement: pip's isolated
# build would fetch a second torch of several GB. With its optional CUDA extension off
# (SAM2_BUILD_CUDA=0) it builds with setuptools alone, so it is built in the venv itself; its
# dependencies come with requirements.txt. setuptools >= 70.1 builds wheels without the `wheel` package.
step "sam2 (SAM 2.1), built in .venv without its CUDA extension"
export SAM2_BUILD_CUDA=0
pip_install "setuptools==84.2.1"
pip_install --no-build-isolation --no-deps "$(grep -E '^sam2==' requirements.txt)"
if $with_tests; then
    step "the backend's and the tests' Python packages into .venv (first time: several minutes, torch is the bulk)"
    pip_install -r requirements-tests.txt
else
    step "the backend's Python packages into .venv (first time: several minutes, torch is the bulk)"
    pip_install -r requirements.txt
fi

if $with_tests; then
    # Label Studio gets its own environment: its dependencies clash with the backend's.
    if ! .lsvenv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('label-studio') != '$LABEL_STUDIO_VERSION')" 2>/dev/null; then
        step "Label Studio $LABEL_STUDIO_VERSION into .lsvenv"
        rm -rf .lsvenv
        python3 -m venv .lsvenv
        .lsvenv/bin/pip install -q "label-studio==$LABEL_STUDIO_VERSION"
    fi
fi
step "done"
