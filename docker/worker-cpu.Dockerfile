# syntax=docker/dockerfile:1
# Charter CPU worker: a Celery worker that labels with the transformers engine.
#
# Build from the repository root:
#   docker build -f docker/worker-cpu.Dockerfile -t charter-worker-cpu .
# TORCH_INDEX_URL picks the torch wheel index (the CPU-only wheels by default,
# which leave the CUDA libraries out of the image).
FROM python:3.11.14-slim-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CHARTER_ENV=production \
    CHARTER_DATA_DIR=/var/lib/charter \
    CHARTER_CONSTITUTIONS_DIR=/app/constitutions \
    CHARTER_MODELS_DIR=/models \
    CHARTER_ARTIFACTS_DIR=/artifacts \
    CHARTER_WORKER_ENGINE=transformers \
    HF_HOME=/home/charter/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    REMAP_SIGTERM=SIGQUIT

RUN groupadd --system --gid 10001 charter \
    && useradd --system --uid 10001 --gid charter --create-home --home-dir /home/charter \
        --shell /usr/sbin/nologin charter \
    && mkdir -p /app /models /artifacts /var/lib/charter \
    && chown charter:charter /artifacts /var/lib/charter

# torch is the heaviest layer: installed on its own so that it stays cached.
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==2.13.0"

WORKDIR /app

COPY pyproject.toml README.md ./
RUN mkdir -p charter services workers migrations \
    && touch charter/__init__.py services/__init__.py workers/__init__.py migrations/__init__.py \
    && pip install --no-cache-dir "./[worker]"

COPY charter ./charter
COPY services ./services
COPY workers ./workers
COPY migrations ./migrations
COPY constitutions ./constitutions
RUN pip install --no-cache-dir --no-deps --force-reinstall "./[worker]" \
    && rm -rf build ./*.egg-info

USER 10001:10001
# Celery: SIGTERM is remapped to SIGQUIT (REMAP_SIGTERM above), a cold shutdown.
# The running chunk is interrupted and its items given back at once (queued, lease
# cleared, republished; workers/shutdown.py), and the worker exits within
# CHARTER_WORKER_SHUTDOWN_SECONDS (default 30). Give the container a stop grace
# period longer than that (docker-compose.yml: 45 s).
STOPSIGNAL SIGTERM
# The worker touches /tmp/charter-worker-alive while it is healthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
    CMD ["sh", "-c", "find /tmp/charter-worker-alive -mmin -2 | grep -q ."]
CMD ["celery", "-A", "workers.celery_app", "worker", "--loglevel=INFO", "--concurrency=1"]
