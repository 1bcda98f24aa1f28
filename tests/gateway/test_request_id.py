"""``X-Request-ID``: echoed when valid, replaced when not, on every answer (404, 422 and
500 included), and on the JSON log lines of the request; ``/readyz`` names what is down."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine

from charter import log_format
from services.gateway.request_id import HEADER, MAX_LENGTH

FRESH = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the gateway logs meanwhile, formatted as in production (JSON lines)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log_format.formatter(json=True))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("incoming", ["abc-123", "proxy.7f3e:42_x", "a" * MAX_LENGTH])
def test_a_valid_id_is_echoed(client: TestClient, incoming: str) -> None:
    response = client.get("/healthz", headers={HEADER: incoming})
    assert response.headers[HEADER] == incoming


@pytest.mark.parametrize("incoming", ["has space", "semi;colon", "a" * (MAX_LENGTH + 1), "", "é"])
def test_a_malformed_id_is_replaced(client: TestClient, incoming: str) -> None:
    response = client.get("/healthz", headers={HEADER: incoming.encode("utf-8")})
    assert FRESH.fullmatch(response.headers[HEADER]), response.headers[HEADER]


def test_each_request_gets_its_own_fresh_id(client: TestClient) -> None:
    ids = {client.get("/healthz").headers[HEADER] for _ in range(3)}
    assert len(ids) == 3 and all(FRESH.fullmatch(i) for i in ids)


def test_errors_carry_the_id(client: TestClient, admin_headers: dict[str, str]) -> None:
    missing = client.get("/v1/nothing-here", headers={HEADER: "r-404"})
    assert missing.status_code == 404 and missing.headers[HEADER] == "r-404"
    invalid = client.post("/v1/jobs", json={"type": 7}, headers={**admin_headers, HEADER: "r-422"})
    assert invalid.status_code == 422 and invalid.headers[HEADER] == "r-422"
    unauthorised = client.get("/v1/workers", headers={HEADER: "r-401"})
    assert unauthorised.status_code == 401 and unauthorised.headers[HEADER] == "r-401"


def test_a_500_carries_the_id_and_its_log_line_has_it(
    app: FastAPI, json_lines: io.StringIO
) -> None:
    def boom() -> None:
        raise RuntimeError("kaboom")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/boom", headers={HEADER: "r-500"})
        other = client.get("/boom")
    assert response.status_code == 500 and response.headers[HEADER] == "r-500"
    errors = [r for r in records(json_lines) if r["event"].startswith("unhandled error")]
    assert [e["request_id"] for e in errors] == ["r-500", other.headers[HEADER]]
    assert errors[0]["level"] == "error" and "kaboom" in errors[0]["exception"]
    # Bound per request: a log line outside any request has no id.
    logging.getLogger("test").warning("outside")
    assert "request_id" not in records(json_lines)[-1]


def test_readyz_when_database_and_broker_answer(client: TestClient, make_client: Any) -> None:
    assert client.get("/readyz").json() == {"status": "ready"}  # the filesystem broker
    on_redis = make_client(broker_url="redis://127.0.0.1:6379/0")
    assert on_redis.get("/readyz").status_code == 200


def test_readyz_names_a_dead_broker(make_client: Any) -> None:
    response = make_client(broker_url="redis://127.0.0.1:1/0").get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("broker: ")
    assert "database" not in response.json()["detail"]


def test_readyz_names_a_dead_embedded_broker(client: TestClient, settings: Any) -> None:
    folder = settings.broker_dir / "queue"
    folder.rename(folder.with_name("moved"))
    response = client.get("/readyz")
    assert response.status_code == 503 and response.json()["detail"].startswith("broker: ")


def test_readyz_names_a_dead_database(make_client: Any) -> None:
    gone = create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
    )
    try:
        response = make_client(engine_override=gone).get("/readyz")
    finally:
        gone.dispose()
    assert response.status_code == 503
    assert response.json()["detail"].startswith("database: ")
    assert "broker" not in response.json()["detail"]
