# Segmentation-assist ML backend for Label Studio: `gunicorn backend.wsgi:app` on port 9090.
#
#   CPU (default):  docker build -t segmentation-backend .   (SAM 2.1 hiera_tiny: the CPU choice, see README)
#   NVIDIA GPU:     docker build -t segmentation-backend --build-arg TORCH_INDEX_URL= .
#                   (torch from the default index, PyPI, whose Linux wheels are the CUDA builds;
#                   run with `docker run --gpus all …`)
#   Other SAM:      --build-arg SAM_MODEL_TYPE=sam2.1_hiera_large on a GPU, vit_b for SAM 1 (any type
#                   `python -m backend download-sam` knows)
#   No SAM inside:  --build-arg SAM_MODEL_TYPE=none (no download, e.g. offline); mount a checkpoint
#                   at run time: -v /path/sam_vit_b_01ec64.pth:/opt/sam/checkpoint:ro -e SAM_MODEL_TYPE=vit_b
#
# Runtime environment (see docker-compose.yml for the full list): LABEL_STUDIO_URL,
# LABEL_STUDIO_API_KEY, BASIC_AUTH_USER/BASIC_AUTH_PASS, REDIS_URL, WORKERS, THREADS, DEVICE.
#
# Three stages keep the image to the installed wheels, the SAM checkpoint and the code: `deps`
# builds the virtualenv, `sam` downloads the checkpoint, and the final stage copies both onto a
# fresh base image (no pip, apt or download leftovers in its layers).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
# An extra index for torch and torchvision (the CPU-only wheels are ~3 GB smaller than PyPI's CUDA
# ones). Extra, not instead: wheels on that index depend on packages that only the default index has.
# Empty: torch from the default index alone.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# SAM2_BUILD_CUDA=0: SAM 2 installs without compiling its optional CUDA extension.
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 SAM2_BUILD_CUDA=0
RUN python -m venv /venv
# torch/torchvision first, with their pins from requirements.txt, so that only they are looked up on
# TORCH_INDEX_URL; the second install finds them satisfied.
COPY requirements.txt /tmp/requirements.txt
# sam2 is source-only and would build in an isolated environment with a second torch: it is built in
# the venv instead (scripts/install.sh says why).
RUN /venv/bin/pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        $(grep -E '^(torch|torchvision)==' /tmp/requirements.txt) \
 && /venv/bin/pip install "setuptools==84.2.1" \
 && /venv/bin/pip install --no-build-isolation --no-deps $(grep -E '^sam2==' /tmp/requirements.txt) \
 && /venv/bin/pip install -r /tmp/requirements.txt

FROM deps AS sam
ARG SAM_MODEL_TYPE=sam2.1_hiera_tiny
# Only what `download-sam` imports (tests/test_dockerfile.py checks the list), so that code changes
# don't download the checkpoint again.
WORKDIR /src
COPY backend/__init__.py backend/__main__.py backend/cli.py backend/settings.py backend/checksums.py backend/files.py \
     backend/sam_checkpoints.py backend/
COPY backend/segmenters/__init__.py backend/segmenters/sam_types.py backend/segmenters/
RUN mkdir /opt/sam \
 && if [ "$SAM_MODEL_TYPE" != none ]; then \
        /venv/bin/python -m backend download-sam "$SAM_MODEL_TYPE" --dir /opt/sam \
        && ln -s "$(find /opt/sam -type f | head -n 1)" /opt/sam/checkpoint; \
    fi

FROM ${PYTHON_IMAGE}
ARG SAM_MODEL_TYPE=sam2.1_hiera_tiny
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/venv/bin:$PATH
RUN useradd --create-home --uid 1000 backend \
 && mkdir /data && chown backend:backend /data
COPY --from=deps /venv /venv
COPY --from=sam /opt/sam /opt/sam
WORKDIR /app
# Only what the server runs, never the whole build context: an .env next to docker-compose.yml holds
# the Label Studio token and the passwords (.dockerignore keeps .env* and local SAM checkpoints out too).
COPY gunicorn.conf.py requirements.txt ./
COPY model_weights/ model_weights/
COPY backend/ backend/

# State shared by every worker and replica (project setups, training jobs, model versions).
VOLUME /data
ENV MODEL_DIR=/data \
    SAM_MODEL_TYPE=${SAM_MODEL_TYPE} \
    SAM_CHECKPOINT=/opt/sam/checkpoint \
    PORT=9090

USER backend
EXPOSE 9090
# Workers, threads and timeouts: gunicorn.conf.py (WORKERS, THREADS, GUNICORN_TIMEOUT).
CMD ["gunicorn", "backend.wsgi:app"]
