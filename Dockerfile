# Segmentation-assist ML backend for Label Studio: `gunicorn backend.wsgi:app` on port 9090.
#
#   CPU (default):  docker build -t segmentation-backend .
#   NVIDIA GPU:     docker build -t segmentation-backend --build-arg TORCH_INDEX_URL=https://pypi.org/simple .
#                   (PyPI's Linux torch wheels are the CUDA builds; run with `docker run --gpus all …`)
#   Other SAM:      --build-arg SAM_MODEL_TYPE=vit_l (or vit_h; bigger and slower, more accurate)
#
# Runtime environment (see docker-compose.yml for the full list): LABEL_STUDIO_URL,
# LABEL_STUDIO_API_KEY, BASIC_AUTH_USER/BASIC_AUTH_PASS, REDIS_URL, WORKERS, THREADS, DEVICE.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

# Where torch and torchvision come from: the CPU-only index keeps the image ~2 GB smaller.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG SAM_MODEL_TYPE=vit_b

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 1000 backend
WORKDIR /app

# Dependencies first, so code changes don't reinstall them. torch/torchvision take the pins from
# requirements.txt but come from TORCH_INDEX_URL; the second install then finds them satisfied.
COPY requirements.txt .
RUN pip install --index-url "${TORCH_INDEX_URL}" $(grep -E '^(torch|torchvision)==' requirements.txt) \
 && pip install -r requirements.txt

# The SAM checkpoint (sha256-verified), before the rest of the code so that code changes don't
# download it again. These are all the modules `download-sam` imports.
COPY backend/__init__.py backend/__main__.py backend/cli.py backend/settings.py backend/sam_checkpoints.py backend/
RUN python -m backend download-sam "${SAM_MODEL_TYPE}" --dir /opt/sam \
 && ln -s /opt/sam/sam_"${SAM_MODEL_TYPE}"_*.pth /opt/sam/checkpoint.pth

COPY . .

# State shared by every worker and replica (project setups, training jobs, model versions).
RUN mkdir /data && chown backend:backend /data
VOLUME /data
ENV MODEL_DIR=/data \
    SAM_MODEL_TYPE=${SAM_MODEL_TYPE} \
    SAM_CHECKPOINT=/opt/sam/checkpoint.pth \
    PORT=9090

USER backend
EXPOSE 9090
# Workers, threads and timeouts: gunicorn.conf.py (WORKERS, THREADS, GUNICORN_TIMEOUT).
CMD ["gunicorn", "backend.wsgi:app"]
