"""Liveness, readiness and Prometheus metrics. No API key needed."""

from __future__ import annotations

import os

from celery import Celery
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

router = APIRouter(tags=["health"])

BROKER_TIMEOUT_SECONDS = 2.0
"""How long readiness waits for the broker to connect and answer."""


@router.get("/healthz")
async def healthz() -> dict[str, str]:  # on the event loop itself: no threadpool hop
    return {"status": "ok"}


def ping_broker(producer: Celery, timeout: float = BROKER_TIMEOUT_SECONDS) -> None:
    """Connect afresh (a pooled connection would hide a broker that went away) and, on
    Redis, PING; one attempt, no retries. Raises when the broker does not answer. The
    embedded filesystem transport is up when its queue folder can be written."""
    options = {
        "max_retries": 0,
        "retry_on_timeout": False,
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
    }
    with producer.connection_for_write(transport_options=options) as connection:
        connection.ensure_connection(max_retries=0, timeout=timeout)
        client = getattr(connection.default_channel, "client", None)
        if client is not None and hasattr(client, "ping"):
            client.ping()
        folder = connection.transport_options.get("data_folder_in")
        if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
            raise FileNotFoundError(f"the broker folder {folder} is not writable")


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 when the database and the broker answer; 503 naming each that does not."""
    state = request.app.state

    def ping_database() -> None:
        with state.sessions() as session:
            session.execute(text("SELECT 1"))

    down = []
    for name, check in (
        ("database", ping_database),
        ("broker", lambda: ping_broker(state.producer)),
    ):
        try:
            await run_in_threadpool(check)
        except Exception as exc:  # any failure means not ready; say which
            down.append(f"{name}: {type(exc).__name__}")
    if down:
        return JSONResponse({"status": "unavailable", "detail": "; ".join(down)}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """The app's registry: Charter's series (read from the database now) and per-route
    HTTP metrics (services/gateway/metrics.py)."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
