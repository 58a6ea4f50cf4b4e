#!/usr/bin/env bash
# Installs what the backend needs into .venv; with --tests also what the test suite needs:
# redis-server, chromium and docker-compose from Debian (as root), the test packages, and Label
# Studio in its own .lsvenv. Re-runs are cheap: existing virtualenvs are reused when they already match.
#
# torch and torchvision: on a machine without an NVIDIA GPU (nvidia-smi absent or failing) they come
# from PyTorch's CPU index (~0.2 GB, where PyPI's Linux wheels pull in ~3.2 GB of CUDA libraries) when
# that index answers within TORCH_PROBE_S seconds; otherwise (offline, a GPU) they resolve through the
# machine's pip configuration like everything else.
# TORCH_INDEX_URL overrides: an extra pip index for torch and torchvision, or set and empty for the
# machine's pip configuration alone.
set -euo pipefail

CPU_TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_PROBE_S=${TORCH_PROBE_S:-5}

t0=$SECONDS
step() { echo "== install [$((SECONDS - t0)) s] $*"; }

# Whether URL answers within TORCH_PROBE_S seconds (curl; without it, python3).
answers() {
    if command -v curl >/dev/null 2>&1; then
        curl --silent --fail --head --output /dev/null --max-time "$TORCH_PROBE_S" "$1"
    else
        python3 -c 'import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], method="HEAD"), timeout=float(sys.argv[2]))' \
            "$1" "$TORCH_PROBE_S" >/dev/null 2>&1
    fi
}

# Prints the extra index for torch and torchvision ("" for the machine's pip configuration); the
# step line saying why goes to stderr.
torch_index() {
    if [ -n "${TORCH_INDEX_URL+set}" ]; then
        step "torch: TORCH_INDEX_URL=${TORCH_INDEX_URL:-(empty: the pip configuration)}" >&2
        echo "${TORCH_INDEX_URL}"
    elif nvidia-smi >/dev/null 2>&1; then
        step "torch: an NVIDIA GPU answers nvidia-smi, so the CUDA build through the pip configuration" >&2
    elif answers "$CPU_TORCH_INDEX/torch/"; then
        step "torch: no NVIDIA GPU, so the CPU build from $CPU_TORCH_INDEX" >&2
        echo "$CPU_TORCH_INDEX"
    else
        step "torch: no NVIDIA GPU, but $CPU_TORCH_INDEX did not answer (waited at most $TORCH_PROBE_S s): torch through" \
            "the pip configuration (on PyPI that is the CUDA build, ~3.2 GB more)" >&2
    fi
}

# python3 -m venv needs Debian's python3-venv (ensurepip); as root it is installed, otherwise named.
ensure_venv_module() {
    python3 -c 'import ensurepip, venv' 2>/dev/null && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        step "Debian package python3-venv (python3 -m venv needs it)"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv
    else
        echo "python3 -m venv is not usable here (no ensurepip): install Debian's python3-venv first," \
             "e.g. sudo apt-get install python3-venv, then run this again" >&2
        return 1
    fi
}

# Sourced (tests): the functions above only.
[ "${BASH_SOURCE[0]}" = "$0" ] || return 0

cd "$(dirname "$0")/.."
LABEL_STUDIO_VERSION=1.23.2
with_tests=false
[ "${1:-}" = "--tests" ] && with_tests=true

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
if [ ! -x .venv/bin/python ]; then
    ensure_venv_module
    step "create .venv"
    python3 -m venv .venv
fi
torch_extra_index=$(torch_index)
if [ -n "$torch_extra_index" ]; then
    step "torch and torchvision from $torch_extra_index (extra index)"
    pip_install --extra-index-url "$torch_extra_index" $(grep -E '^(torch|torchvision)==' requirements.txt)
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
