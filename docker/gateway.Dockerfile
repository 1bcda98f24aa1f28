# syntax=docker/dockerfile:1
# Charter gateway: the FastAPI app behind uvicorn (`charter serve`, port 8000).
# Migrations are not run on start (--no-migrate): the same image runs them as a
# one-shot step (`charter db upgrade`), and runs the sweeper (`charter sweeper run`);
# see docker-compose.yml.
#
# Build from the repository root:
#   docker build -f docker/gateway.Dockerfile -t charter-gateway .
FROM python:3.11.14-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CHARTER_ENV=production \
    CHARTER_DATA_DIR=/var/lib/charter \
    CHARTER_CONSTITUTIONS_DIR=/app/constitutions \
    CHARTER_MODELS_DIR=/models \
    CHARTER_ARTIFACTS_DIR=/artifacts

RUN groupadd --system --gid 10001 charter \
    && useradd --system --uid 10001 --gid charter --create-home --home-dir /home/charter \
        --shell /usr/sbin/nologin charter \
    && mkdir -p /app /models /artifacts /var/lib/charter \
    && chown charter:charter /artifacts /var/lib/charter

WORKDIR /app

# Dependencies first, against empty package stubs, so that a source change does
# not reinstall them; then the real source, without touching the dependencies.
COPY pyproject.toml README.md ./
RUN mkdir -p charter services workers migrations \
    && touch charter/__init__.py services/__init__.py workers/__init__.py migrations/__init__.py \
    && pip install --no-cache-dir "./[gateway]"

COPY charter ./charter
COPY services ./services
COPY workers ./workers
COPY migrations ./migrations
COPY constitutions ./constitutions
RUN pip install --no-cache-dir --no-deps --force-reinstall "./[gateway]" \
    && rm -rf build ./*.egg-info

USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
# Slim images have no curl: ask /readyz (database and broker reachable) with urllib.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["charter", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-migrate"]
