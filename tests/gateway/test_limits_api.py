"""Body-size limit (413), malformed input (never a 500), health and readiness."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine

from charter.db.session import make_engine

LIMIT = 4096
JSON = {"Content-Type": "application/json"}
NDJSON = {"Content-Type": "application/x-ndjson"}
YAML = {"Content-Type": "application/yaml"}


@pytest.fixture
def small(make_client: Any) -> TestClient:
    return make_client(max_body_bytes=LIMIT, max_upload_bytes=LIMIT)


def _chunks(total: int, size: int = 1000) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        part = min(size, total - sent)
        sent += part
        yield b" " * part


def _batch_body(size: int) -> bytes:
    """A valid batch creation body of exactly ``size`` bytes."""
    body = json.dumps({"name": "", "rows": [{"prompt": "x"}]}).encode()
    padding = size - len(body)
    assert padding >= 0
    return json.dumps({"name": "", "rows": [{"prompt": "x" * (1 + padding)}]}).encode()


def _assert_413(response: Any) -> None:
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "too_large"
    assert str(LIMIT) in response.json()["detail"]


# --------------------------------------------------------------------------- 413


def test_streamed_uploads_have_their_own_limit_unless_an_idempotency_key_holds_the_body(
    make_client: Any, admin_headers: dict[str, str]
) -> None:
    client = make_client(max_body_bytes=LIMIT, max_upload_bytes=4 * LIMIT)
    rows = b'{"prompt": "x"}\n' * 512  # 8 KiB: over max_body_bytes, under max_upload_bytes
    headers = admin_headers | NDJSON
    done = client.post("/v1/batches/upload", content=rows, headers=headers)
    assert done.status_code == 201, done.text
    assert done.json()["row_count"] == 512
    keyed = headers | {"Idempotency-Key": "upload-1"}
    _assert_413(client.post("/v1/batches/upload", content=rows, headers=keyed))
    too_big = client.post("/v1/batches/upload", content=rows * 3, headers=headers)
    assert too_big.status_code == 413 and str(4 * LIMIT) in too_big.json()["detail"]
    # every other route keeps max_body_bytes
    _assert_413(
        client.post("/v1/batches", content=_batch_body(LIMIT + 1), headers=admin_headers | JSON)
    )


def test_declared_content_length_over_the_limit_is_413(
    small: TestClient, admin_headers: dict[str, str]
) -> None:
    cases = [
        ("/v1/batches", JSON, _batch_body(LIMIT + 1)),
        ("/v1/batches/upload", NDJSON, b'{"prompt": "x"}\n' * 400),
        ("/v1/constitutions", YAML, b"name: x\n" + b"#" * LIMIT),
        ("/v1/jobs", JSON, b"{" + b" " * LIMIT + b"}"),
        ("/v1/keys", JSON, b"{" + b" " * LIMIT + b"}"),
    ]
    for path, content_type, body in cases:
        assert len(body) > LIMIT
        response = small.post(path, content=body, headers={**admin_headers, **content_type})
        _assert_413(response)
        assert response.headers["content-length"] == str(len(response.content))
    # Rejected before authentication: an oversized body never reaches the database.
    _assert_413(small.post("/v1/batches", content=_batch_body(LIMIT + 1), headers=JSON))
    assert small.get("/v1/batches", headers=admin_headers).json()["items"] == []


def test_body_at_the_limit_is_accepted(small: TestClient, admin_headers: dict[str, str]) -> None:
    body = _batch_body(LIMIT)
    assert len(body) == LIMIT
    response = small.post("/v1/batches", content=body, headers={**admin_headers, **JSON})
    assert response.status_code == 201, response.text


def test_chunked_body_over_the_limit_is_413(
    small: TestClient, admin_headers: dict[str, str]
) -> None:
    """No Content-Length: the limit counts bytes as they stream in."""
    for path, content_type in (
        ("/v1/batches", JSON),  # body parsed by FastAPI
        ("/v1/batches/upload", NDJSON),  # body read by the endpoint
        ("/v1/constitutions", YAML),
        ("/v1/jobs", JSON),
    ):
        request = small.build_request(
            "POST",
            path,
            content=_chunks(LIMIT * 3),
            headers={**admin_headers, **content_type},
        )
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        _assert_413(small.send(request))
    # With an Idempotency-Key the route reads the body itself, before the endpoint.
    request = small.build_request(
        "POST",
        "/v1/batches",
        content=_chunks(LIMIT * 2),
        headers={**admin_headers, **JSON, "Idempotency-Key": "big"},
    )
    _assert_413(small.send(request))
    assert small.get("/v1/batches", headers=admin_headers).json()["items"] == []


def test_chunked_body_under_the_limit_is_accepted(
    small: TestClient, admin_headers: dict[str, str]
) -> None:
    lines = [b'{"prompt": "streamed %d"}\n' % i for i in range(20)]
    response = small.post(
        "/v1/batches/upload?name=streamed",
        content=iter(lines),
        headers={**admin_headers, **NDJSON},
    )
    assert response.status_code == 201, response.text
    assert response.json()["row_count"] == 20


# --------------------------------------------------------------------------- never a 500


@pytest.mark.parametrize("path", ["/v1/batches", "/v1/jobs", "/v1/keys"])
def test_malformed_json_bodies_are_422(
    client: TestClient, admin_headers: dict[str, str], path: str
) -> None:
    bodies: list[tuple[bytes, dict[str, str]]] = [
        (b"{", JSON),
        (b"{'single': 'quotes'}", JSON),
        (b"", JSON),
        (b"null", JSON),
        (b"[]", JSON),
        (b'"a string"', JSON),
        (b"12", JSON),
        (b'{"rows": [}', JSON),
        (b"NaN", JSON),
        (b'{"a": 1}', {"Content-Type": "text/plain"}),
        (b'{"a": 1}', {}),
    ]
    for body, content_type in bodies:
        response = client.post(path, content=body, headers={**admin_headers, **content_type})
        assert response.status_code == 422, (path, body, response.text)
        payload = response.json()
        assert {"error", "detail", "field"} <= set(payload), payload
    # Bytes that are not UTF-8 at all: the strict loader's 422, naming the body.
    response = client.post(path, content=b"\xff\xfe\xfd", headers={**admin_headers, **JSON})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "body" and "UTF-8" in response.json()["detail"]


def test_wrong_types_and_unknown_fields_are_422(
    api: Any, client: TestClient, admin_headers: dict[str, str]
) -> None:
    api.push_default(admin_headers)
    batch = api.create_batch(admin_headers, [{"prompt": "x"}])["id"]
    job = {"type": "sl_cai", "batch_id": batch, "constitution": "default", "model": "m"}
    cases: list[tuple[str, Any, str]] = [
        ("/v1/batches", {"rows": [{"prompt": ["not", "text"]}]}, "body.rows.0.prompt"),
        ("/v1/batches", {"rows": [{"prompt": "x"}], "name": 5}, "body.name"),
        ("/v1/batches", {"rows": [{"prompt": "x"}], "owner": "me"}, "body.owner"),
        ("/v1/batches", {"rows": [{"messages": "hi"}]}, "body.rows.0.messages"),
        (
            "/v1/batches",
            {"rows": [{"messages": [{"role": "user"}]}]},
            "body.rows.0.messages.0.content",
        ),
        (
            "/v1/batches",
            {"rows": [{"messages": [{"role": "user", "content": "x", "name": "n"}]}]},
            "body.rows.0.messages.0.name",
        ),
        ("/v1/jobs", {**job, "params": {"rounds": "two"}}, "body.params.rounds"),
        ("/v1/jobs", {**job, "params": {"swap": "sometimes"}}, "body.params.swap"),
        ("/v1/jobs", {**job, "params": {"cot_band": [0.1]}}, "body.params.cot_band.1"),
        ("/v1/jobs", {**job, "chunk_size": 1.5}, "body.chunk_size"),
        ("/v1/jobs", {**job, "batch_id": ["a"]}, "body.batch_id"),
        ("/v1/jobs", {**job, "callback_url": "http://x"}, "body.callback_url"),
        ("/v1/keys", {"scopes": [1, 2]}, "body.scopes.0"),
        ("/v1/keys", {"scopes": ["read"], "expires_in_days": "soon"}, "body.expires_in_days"),
        ("/v1/keys", {"scopes": ["read"], "admin": True}, "body.admin"),
    ]
    for path, body, field in cases:
        response = client.post(path, json=body, headers=admin_headers)
        assert response.status_code == 422, (path, body, response.text)
        payload = response.json()
        assert payload["error"] == "validation_error"
        assert payload["field"] == field, (body, payload)
        assert isinstance(payload["errors"], list) and payload["errors"]
    assert client.get("/v1/jobs", headers=admin_headers).json()["items"] == []


def test_bad_query_and_path_values_are_4xx(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    for method, path, status in (
        ("GET", "/v1/batches?limit=-1", 422),
        ("GET", "/v1/batches?limit=1e3", 422),
        ("GET", "/v1/jobs?cursor=" + "A" * 5000, 422),
        ("GET", "/v1/jobs/x/items?state=", 422),
        ("GET", "/v1/constitutions/default/diff?from=1&to=1e9", 422),
        ("GET", "/v1/constitutions/default@99999999999", 404),  # names no version
        ("GET", "/v1/batches/" + "z" * 300, 404),
        ("GET", "/v1/nowhere", 404),
        ("DELETE", "/v1/batches", 405),
        ("PUT", "/v1/jobs", 405),
    ):
        response = client.request(method, path, headers=admin_headers)
        assert response.status_code == status, (method, path, response.text)
        assert "error" in response.json()


# --------------------------------------------------------------------------- health


def test_healthz_and_readyz(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert client.get("/metrics").status_code == 200


@pytest.fixture
def unreachable_engine(backend: str, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database that cannot be opened, of the same backend."""
    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path}")  # a directory: cannot be opened
    else:
        engine = create_engine(
            "postgresql+psycopg://postgres@127.0.0.1:1/nowhere",
            connect_args={"connect_timeout": 2},
        )
    yield engine
    engine.dispose()


def test_readyz_is_503_when_the_database_is_unreachable(
    make_client: Any, unreachable_engine: Engine, admin_headers: dict[str, str]
) -> None:
    client = make_client(engine_override=unreachable_engine)
    assert client.get("/healthz").status_code == 200  # alive, just not ready
    response = client.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.json()["status"] == "unavailable"
    assert "OperationalError" in response.json()["detail"]

    api = client.get("/v1/batches", headers=admin_headers)
    assert api.status_code == 503, api.text
    assert api.json()["error"] == "unavailable"
    assert api.headers["Retry-After"] == "5"


def test_page_limit_max_is_enforced(make_client: Any, admin_headers: dict[str, str]) -> None:
    client = make_client(page_limit_max=3)
    for n in range(5):
        client.post("/v1/batches", json={"rows": [{"prompt": f"p{n}"}]}, headers=admin_headers)
    too_big = client.get("/v1/batches", params={"limit": 4}, headers=admin_headers)
    assert too_big.status_code == 422, too_big.text
    assert too_big.json()["field"] == "limit" and "at most 3" in too_big.json()["detail"]
    # A route's default above the maximum is lowered to it: pages of 3, every row once.
    seen, cursor = [], None
    while True:
        params = {"cursor": cursor} if cursor else {}
        page = client.get("/v1/batches", params=params, headers=admin_headers).json()
        assert len(page["items"]) <= 3
        seen += [b["id"] for b in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) == 5
    assert client.get("/v1/batches", params={"limit": 3}, headers=admin_headers).status_code == 200
