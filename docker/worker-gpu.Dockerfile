# syntax=docker/dockerfile:1
# Charter GPU worker: a Celery worker that labels with the vLLM engine.
#
# Build from the repository root:
#   docker build -f docker/worker-gpu.Dockerfile -t charter-worker-gpu .
# vLLM pins and brings its own torch (vllm 0.32.0 -> torch 2.13.0 with its CUDA
# libraries as wheels); the CUDA base image supplies the runtime environment
# that the NVIDIA container toolkit expects. Charter is installed without the
# `worker` extra so that it does not pull a second torch.
FROM nvidia/cuda:12.9.1-runtime-ubuntu22.04

ARG VLLM_VERSION=0.32.0

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    CHARTER_ENV=production \
    CHARTER_DATA_DIR=/var/lib/charter \
    CHARTER_CONSTITUTIONS_DIR=/app/constitutions \
    CHARTER_MODELS_DIR=/models \
    CHARTER_ARTIFACTS_DIR=/artifacts \
    CHARTER_WORKER_ENGINE=vllm \
    HF_HOME=/home/charter/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    REMAP_SIGTERM=SIGQUIT

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Python 3.11 from the Ubuntu archive; gcc and the Python headers are needed at
# run time by Triton, which compiles small launchers for vLLM's kernels.
# Ubuntu replaces point releases in its archive, so exact apt pins would break
# rebuilds; the base image tag is pinned instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates gcc libc6-dev python3.11 python3.11-dev python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv "${VIRTUAL_ENV}" \
    && pip install --no-cache-dir --upgrade "pip==25.3"

RUN groupadd --system --gid 10001 charter \
    && useradd --system --uid 10001 --gid charter --create-home --home-dir /home/charter \
        --shell /usr/sbin/nologin charter \
    && mkdir -p /app /models /artifacts /var/lib/charter \
    && chown charter:charter /artifacts /var/lib/charter

# vLLM (and its torch) is the heaviest layer: installed on its own so that it stays cached.
RUN pip install --no-cache-dir "vllm==${VLLM_VERSION}"

WORKDIR /app

COPY pyproject.toml README.md ./
RUN mkdir -p charter services workers migrations \
    && touch charter/__init__.py services/__init__.py workers/__init__.py migrations/__init__.py \
    && pip install --no-cache-dir . "vllm==${VLLM_VERSION}"

COPY charter ./charter
COPY services ./services
COPY workers ./workers
COPY migrations ./migrations
COPY constitutions ./constitutions
RUN pip install --no-cache-dir --no-deps --force-reinstall . \
    && rm -rf build ./*.egg-info

USER 10001:10001
# Celery: SIGTERM is remapped to SIGQUIT (REMAP_SIGTERM above), a cold shutdown.
# The running chunk is interrupted and its items given back at once (queued, lease
# cleared, republished; workers/shutdown.py), and the worker exits within
# CHARTER_WORKER_SHUTDOWN_SECONDS (default 30). Give the container a stop grace
# period longer than that (docker-compose.yml: 45 s).
STOPSIGNAL SIGTERM
# The worker touches /tmp/charter-worker-alive while it is healthy; loading a
# model into vLLM takes minutes, hence the long start period.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD ["sh", "-c", "find /tmp/charter-worker-alive -mmin -2 | grep -q ."]
CMD ["celery", "-A", "workers.celery_app", "worker", "--loglevel=INFO", "--concurrency=1"]
