# syntax=docker/dockerfile:1
# Charter trainer: `charter trainer run`. It talks to the gateway over HTTP only
# (CHARTER_API_URL, CHARTER_API_KEY) and writes trained models to /artifacts.
#
# Build from the repository root:
#   docker build -f docker/trainer.Dockerfile -t charter-trainer .
# By default torch comes from the default index (CUDA-enabled wheels, so the
# image can train on a GPU when one is given to the container); pass
# --build-arg TORCH_INDEX_URL=<CPU wheel index> for a smaller CPU-only image.
FROM python:3.11.14-slim-bookworm

ARG TORCH_INDEX_URL=""

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CHARTER_ENV=production \
    CHARTER_DATA_DIR=/var/lib/charter \
    CHARTER_CONSTITUTIONS_DIR=/app/constitutions \
    CHARTER_MODELS_DIR=/models \
    CHARTER_ARTIFACTS_DIR=/artifacts \
    HF_HOME=/home/charter/.cache/huggingface \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1

RUN groupadd --system --gid 10001 charter \
    && useradd --system --uid 10001 --gid charter --create-home --home-dir /home/charter \
        --shell /usr/sbin/nologin charter \
    && mkdir -p /app /models /artifacts /var/lib/charter \
    && chown charter:charter /artifacts /var/lib/charter

# torch is the heaviest layer: installed on its own so that it stays cached.
RUN if [ -n "${TORCH_INDEX_URL}" ]; then export PIP_INDEX_URL="${TORCH_INDEX_URL}"; fi \
    && pip install --no-cache-dir "torch==2.13.0"

WORKDIR /app

COPY pyproject.toml README.md ./
RUN mkdir -p charter services workers migrations \
    && touch charter/__init__.py services/__init__.py workers/__init__.py migrations/__init__.py \
    && pip install --no-cache-dir "./[trainer]"

COPY charter ./charter
COPY services ./services
COPY workers ./workers
COPY migrations ./migrations
COPY constitutions ./constitutions
RUN pip install --no-cache-dir --no-deps --force-reinstall "./[trainer]" \
    && rm -rf build ./*.egg-info

USER 10001:10001
# SIGTERM asks the trainer to checkpoint and stop; compose gives it a long grace period.
STOPSIGNAL SIGTERM
# The trainer touches /tmp/charter-trainer-alive while it is healthy.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["sh", "-c", "find /tmp/charter-trainer-alive -mmin -2 | grep -q ."]
CMD ["charter", "trainer", "run"]
