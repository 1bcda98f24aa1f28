"""API keys, scopes, project isolation and ``Idempotency-Key`` replays."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, text

from charter import keys
from charter.db.models import ApiKey, IdempotencyRecord, Job, WorkItem, utcnow
from charter.db.session import session_factory

SPEC = {"type": "sl_cai", "constitution": "default", "model": "smollm2-135m", "seed": 7}


def _error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert {"error", "detail"} <= set(body)
    if field is not None:
        assert body.get("field") == field, body
    return body


_ROUTES: list[tuple[str, str]] = []


def _v1_routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, concrete path) under /v1, path parameters filled with dummies."""
    if not _ROUTES:  # the OpenAPI document is the same for every app; build it once
        for path, operations in app.openapi()["paths"].items():
            if path.startswith("/v1"):
                concrete = re.sub(r"\{[^}]+\}", "0123456789abcdef", path)
                _ROUTES.extend((method.upper(), concrete) for method in sorted(operations))
    return list(_ROUTES)


def _count(engine: Engine, model: Any) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# --------------------------------------------------------------------------- authentication


def test_every_v1_route_needs_a_key(app: FastAPI, client: TestClient) -> None:
    routes = _v1_routes(app)
    assert len(routes) >= 17
    for method, path in routes:
        response = client.request(method, path)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"] == "unauthorized"


def test_bad_keys_are_401(client: TestClient, issue: Any) -> None:
    good = issue("alpha", ("admin",)).key
    prefix = good.split("_")[1]
    for bad in (
        "",
        "nonsense",
        "chk_",
        "chk_short_secret",
        f"chk_{prefix}_",
        f"chk_{prefix}_wrong-secret",
        good[:-1] + ("A" if good[-1] != "A" else "B"),
        f"chk_{'0' * 12}_{good.split('_', 2)[2]}",
        good + "x",
    ):
        response = client.get("/v1/batches", headers={"X-API-Key": bad})
        assert response.status_code == 401, (bad, response.text)
    for authorization in (f"Basic {good}", good, "Bearer ", "Bearer nonsense"):
        response = client.get("/v1/batches", headers={"Authorization": authorization})
        assert response.status_code == 401, (authorization, response.text)


def test_header_and_bearer_keys_work(client: TestClient, issue: Any) -> None:
    key = issue("alpha", ("read",)).key
    assert client.get("/v1/batches", headers={"X-API-Key": key}).status_code == 200
    assert client.get("/v1/batches", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert client.get("/v1/batches", headers={"authorization": f"bearer {key}"}).status_code == 200


def test_key_in_query_string_is_401(client: TestClient, issue: Any) -> None:
    key = issue("alpha", ("admin",)).key
    for name in ("api_key", "key"):
        response = client.get("/v1/batches", params={name: key})
        assert "query string" in _error(response, 401)["detail"]
        # Even alongside a valid header: a key in a URL is already leaked.
        response = client.get("/v1/batches", params={name: key}, headers={"X-API-Key": key})
        _error(response, 401)


def test_revoked_key_is_401(client: TestClient, issue: Any, admin_headers: dict[str, str]) -> None:
    victim = issue("alpha", ("submit",))
    assert client.get("/v1/batches", headers=victim.headers).status_code == 200
    response = client.post(f"/v1/keys/{victim.id}/revoke", headers=admin_headers)
    assert response.status_code == 200, response.text
    revoked_at = response.json()["revoked_at"]
    assert revoked_at is not None
    assert "revoked" in _error(client.get("/v1/batches", headers=victim.headers), 401)["detail"]
    again = client.post(f"/v1/keys/{victim.id}/revoke", headers=admin_headers)
    assert again.status_code == 200 and again.json()["revoked_at"] == revoked_at


def test_expired_key_is_401(client: TestClient, issue: Any) -> None:
    expired = issue("alpha", ("admin",), expires_at=utcnow() - timedelta(seconds=1))
    assert "expired" in _error(client.get("/v1/batches", headers=expired.headers), 401)["detail"]
    valid = issue("alpha", ("admin",), expires_at=utcnow() + timedelta(hours=1))
    assert client.get("/v1/batches", headers=valid.headers).status_code == 200


def test_read_only_key_gets_403_on_every_post(
    app: FastAPI, client: TestClient, make_headers: Any
) -> None:
    reader = make_headers("alpha", "read")
    posts = [(m, p) for m, p in _v1_routes(app) if m == "POST"]
    assert len(posts) >= 7  # every POST route the app has, including later ones
    for method, path in posts:
        response = client.request(method, path, headers=reader, json={})
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"] == "forbidden"
    for method, path in _v1_routes(app):
        if method == "GET" and path.startswith("/v1/keys"):
            _error(client.get(path, headers=reader), 403)  # listing keys is for admins


def test_scopes_imply_what_they_need(client: TestClient, make_headers: Any) -> None:
    submit, train, read = (make_headers("alpha", s) for s in ("submit", "train", "read"))
    assert client.get("/v1/batches", headers=submit).status_code == 200
    assert client.get("/v1/batches", headers=train).status_code == 200
    body = {"rows": [{"prompt": "x"}]}
    assert client.post("/v1/batches", json=body, headers=submit).status_code == 201
    _error(client.post("/v1/batches", json=body, headers=train), 403)
    _error(client.post("/v1/batches", json=body, headers=read), 403)
    for headers in (submit, train, read):
        _error(client.get("/v1/keys", headers=headers), 403)
        _error(client.post("/v1/keys", json={"scopes": ["read"]}, headers=headers), 403)


# --------------------------------------------------------------------------- /v1/keys


def test_admin_creates_keys_shown_once_and_stored_hashed(
    client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    response = client.post(
        "/v1/keys",
        json={"name": "ci", "scopes": ["submit", "read"], "expires_in_days": 30},
        headers=admin_headers,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    plaintext = created["key"]
    assert plaintext.startswith(f"chk_{created['prefix']}_")
    assert created["name"] == "ci"
    assert created["scopes"] == ["read", "submit"]
    assert created["revoked_at"] is None and created["last_used_at"] is None
    assert created["expires_at"] is not None

    # The new key works, with its scopes.
    new_headers = {"X-API-Key": plaintext}
    assert client.get("/v1/batches", headers=new_headers).status_code == 200
    _error(client.get("/v1/keys", headers=new_headers), 403)

    listing = client.get("/v1/keys", headers=admin_headers)
    assert listing.status_code == 200
    rows = listing.json()
    assert len(rows) == 2
    assert all("key" not in row for row in rows)  # shown once, never listed
    listed = next(r for r in rows if r["id"] == created["id"])
    assert listed["last_used_at"] is not None  # touched by the request above
    assert listed["prefix"] == created["prefix"]

    secret = plaintext.split("_", 2)[2]
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT * FROM api_keys")).mappings().all()
    assert len(stored) == 2
    for row in stored:
        for column, value in row.items():
            assert plaintext not in str(value), column
            assert secret not in str(value), column
    with session_factory(engine)() as session:
        row = session.get_one(ApiKey, created["id"])
        assert len(row.key_hash) == 64 and row.key_hash != plaintext


def test_key_creation_validation(client: TestClient, admin_headers: dict[str, str]) -> None:
    cases: list[tuple[Any, str]] = [
        ({"scopes": []}, "body.scopes"),
        ({"scopes": ["root"]}, "body.scopes.0"),
        ({"scopes": [*keys.SCOPES, "read"]}, "body.scopes"),  # more entries than scopes
        ({}, "body.scopes"),
        ({"scopes": "read"}, "body.scopes"),
        ({"scopes": ["read"], "expires_in_days": 0}, "body.expires_in_days"),
        ({"scopes": ["read"], "expires_in_days": 3651}, "body.expires_in_days"),
        ({"scopes": ["read"], "name": "n" * 129}, "body.name"),
        ({"scopes": ["read"], "project": "other"}, "body.project"),
    ]
    for body, field in cases:
        response = client.post("/v1/keys", json=body, headers=admin_headers)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["field"] == field, (body, response.json())
    assert len(client.get("/v1/keys", headers=admin_headers).json()) == 1


def test_revoke_unknown_key_is_404(client: TestClient, admin_headers: dict[str, str]) -> None:
    _error(client.post("/v1/keys/does-not-exist/revoke", headers=admin_headers), 404, "key_id")


# --------------------------------------------------------------------------- isolation


@pytest.fixture
def two_projects(api: Any, make_headers: Any, issue: Any) -> dict[str, Any]:
    """Project A with a constitution, a batch, a job and a spare key; project B empty."""
    a = make_headers("project-a", "admin")
    b = make_headers("project-b", "admin")
    api.push_default(a)
    batch = api.create_batch(a, [{"prompt": f"p{i}"} for i in range(3)], "a-batch")
    job = api.submit(a, batch_id=batch["id"])
    spare = issue("project-a", ("read",))
    return {"a": a, "b": b, "batch": batch["id"], "job": job["id"], "a_key": spare}


def test_other_projects_objects_are_404(client: TestClient, two_projects: dict[str, Any]) -> None:
    b, batch, job = two_projects["b"], two_projects["batch"], two_projects["job"]
    key_id = two_projects["a_key"].id
    for method, path, field in (
        ("GET", "/v1/constitutions/default", "ref"),
        ("GET", "/v1/constitutions/default@1", "ref"),
        ("GET", "/v1/constitutions/default/versions", "name"),
        ("GET", "/v1/constitutions/default/diff?from=1&to=1", "name"),
        ("GET", f"/v1/batches/{batch}", "batch_id"),
        ("GET", f"/v1/batches/{batch}/prompts", "batch_id"),
        ("GET", f"/v1/jobs/{job}", "job_id"),
        ("GET", f"/v1/jobs/{job}/results", "job_id"),
        ("GET", f"/v1/jobs/{job}/items", "job_id"),
        ("POST", f"/v1/jobs/{job}/cancel", "job_id"),
        ("POST", f"/v1/keys/{key_id}/revoke", "key_id"),
    ):
        _error(client.request(method, path, headers=b), 404, field)

    # Submitting against A's batch or A's constitution: not found either.
    _error(client.post("/v1/jobs", json={**SPEC, "batch_id": batch}, headers=b), 404, "batch_id")
    own = client.post("/v1/batches", json={"rows": [{"prompt": "x"}]}, headers=b).json()["id"]
    response = client.post("/v1/jobs", json={**SPEC, "batch_id": own}, headers=b)
    _error(response, 404, "constitution")

    # Nothing B tried touched A.
    a = two_projects["a"]
    assert client.get(f"/v1/jobs/{job}", headers=a).json()["status"] == "queued"
    assert client.get("/v1/batches", headers=two_projects["a_key"].headers).status_code == 200


def test_lists_never_show_another_projects_objects(
    api: Any, client: TestClient, two_projects: dict[str, Any]
) -> None:
    a, b = two_projects["a"], two_projects["b"]
    assert client.get("/v1/constitutions", headers=b).json() == []
    assert client.get("/v1/batches", headers=b).json() == {"items": [], "next_cursor": None}
    assert client.get("/v1/jobs", headers=b).json() == {"items": [], "next_cursor": None}
    b_keys = client.get("/v1/keys", headers=b).json()
    a_keys = client.get("/v1/keys", headers=a).json()
    assert len(b_keys) == 1 and len(a_keys) == 2
    assert not {k["id"] for k in b_keys} & {k["id"] for k in a_keys}

    # B's objects of the same name are its own: its "default" starts at version 1.
    pushed = api.push_default(b)
    assert (pushed["version"], pushed["created"]) == (1, True)
    batch = api.create_batch(b, [{"prompt": "b"}], "b-batch")
    job = api.submit(b, batch_id=batch["id"])
    assert [c["latest_ref"] for c in client.get("/v1/constitutions", headers=b).json()] == [
        "default@1"
    ]
    assert [x["id"] for x in client.get("/v1/batches", headers=b).json()["items"]] == [batch["id"]]
    assert [x["id"] for x in client.get("/v1/jobs", headers=b).json()["items"]] == [job["id"]]
    assert two_projects["batch"] not in {
        x["id"] for x in client.get("/v1/batches", headers=b).json()["items"]
    }
    assert [x["id"] for x in client.get("/v1/jobs", headers=a).json()["items"]] == [
        two_projects["job"]
    ]


# --------------------------------------------------------------------------- idempotency


def test_idempotent_job_submission_replays(
    api: Any, client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    api.push_default(admin_headers)
    batch = api.create_batch(admin_headers, [{"prompt": f"p{i}"} for i in range(5)])
    body = {**SPEC, "batch_id": batch["id"]}
    headers = {**admin_headers, "Idempotency-Key": "submit-1"}

    first = client.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert "Idempotent-Replayed" not in first.headers
    second = client.post("/v1/jobs", json=body, headers=headers)
    assert second.status_code == 202, second.text
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert _count(engine, Job) == 1
    assert _count(engine, WorkItem) == 5

    changed = client.post("/v1/jobs", json={**body, "seed": 8}, headers=headers)
    _error(changed, 422, "Idempotency-Key")
    assert _count(engine, Job) == 1

    fresh = client.post("/v1/jobs", json=body, headers={**admin_headers, "Idempotency-Key": "2"})
    assert fresh.status_code == 202 and fresh.json()["id"] != first.json()["id"]
    assert "Idempotent-Replayed" not in fresh.headers
    assert _count(engine, Job) == 2


def test_idempotency_keys_are_per_project(
    api: Any, client: TestClient, make_headers: Any, engine: Engine
) -> None:
    a, b = make_headers("project-a", "admin"), make_headers("project-b", "admin")
    ids = []
    for headers in (a, b):
        api.push_default(headers)
        batch = api.create_batch(headers, [{"prompt": "p"}])
        body = {**SPEC, "batch_id": batch["id"]}
        response = client.post("/v1/jobs", json=body, headers={**headers, "Idempotency-Key": "k"})
        assert response.status_code == 202, response.text
        assert "Idempotent-Replayed" not in response.headers
        ids.append(response.json()["id"])
    assert ids[0] != ids[1]
    assert _count(engine, Job) == 2
    with session_factory(engine)() as session:
        records = session.scalars(select(IdempotencyRecord)).all()
        assert sorted(r.key for r in records) == ["k", "k"]


def test_idempotency_on_other_posts(client: TestClient, admin_headers: dict[str, str]) -> None:
    headers = {**admin_headers, "Idempotency-Key": "batch-1"}
    body = {"name": "once", "rows": [{"prompt": "x"}]}
    first = client.post("/v1/batches", json=body, headers=headers)
    second = client.post("/v1/batches", json=body, headers=headers)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(client.get("/v1/batches", headers=admin_headers).json()["items"]) == 1

    # A different endpoint with the same key is a different request.
    upload = client.post(
        "/v1/batches/upload",
        content=b'{"prompt": "x"}\n',
        headers={**headers, "Content-Type": "application/x-ndjson"},
    )
    _error(upload, 422, "Idempotency-Key")

    # A key creation is not replayed (its secret is shown once): 409 naming the key made.
    key_headers = {**admin_headers, "Idempotency-Key": "key-1"}
    made = client.post("/v1/keys", json={"scopes": ["read"]}, headers=key_headers)
    again = client.post("/v1/keys", json={"scopes": ["read"]}, headers=key_headers)
    assert made.status_code == 201
    assert made.json()["id"] in _error(again, 409, "Idempotency-Key")["detail"]
    assert made.json()["key"] not in again.text
    assert len(client.get("/v1/keys", headers=admin_headers).json()) == 2


def test_failed_requests_are_not_recorded(
    client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    headers = {**admin_headers, "Idempotency-Key": "retry-me"}
    bad = client.post("/v1/batches", json={"rows": []}, headers=headers)
    assert bad.status_code == 422
    missing = client.post("/v1/jobs", json={**SPEC, "batch_id": "nope"}, headers=headers)
    assert missing.status_code == 404
    assert _count(engine, IdempotencyRecord) == 0
    good = client.post("/v1/batches", json={"rows": [{"prompt": "x"}]}, headers=headers)
    assert good.status_code == 201, good.text
    assert "Idempotent-Replayed" not in good.headers
    assert _count(engine, IdempotencyRecord) == 1


def test_idempotency_key_length(client: TestClient, admin_headers: dict[str, str]) -> None:
    body = {"rows": [{"prompt": "x"}]}
    too_long = {**admin_headers, "Idempotency-Key": "k" * 256}
    _error(client.post("/v1/batches", json=body, headers=too_long), 422, "Idempotency-Key")
    longest = {**admin_headers, "Idempotency-Key": "k" * 255}
    assert client.post("/v1/batches", json=body, headers=longest).status_code == 201
    # On GET the header means nothing.
    assert client.get("/v1/batches", headers=too_long).status_code == 200


# --------------------------------------------------------------------------- last admin key


def test_the_last_admin_key_cannot_be_revoked(
    client: TestClient, issue: Any, engine: Engine
) -> None:
    admin = issue("alpha", ("admin",))
    reader = issue("alpha", ("read",))
    expired = issue("alpha", ("admin",), expires_at=utcnow() - timedelta(seconds=1))
    other_project = issue("beta", ("admin",))  # another project's admins do not count
    assert other_project.project_id != admin.project_id
    # The expired admin key is not usable, so `admin` is the last one.
    body = _error(client.post(f"/v1/keys/{admin.id}/revoke", headers=admin.headers), 409, "key_id")
    assert "last" in body["detail"]
    assert client.post(f"/v1/keys/{reader.id}/revoke", headers=admin.headers).status_code == 200
    assert client.post(f"/v1/keys/{expired.id}/revoke", headers=admin.headers).status_code == 200
    # With a second admin key, the first can go; then the second is the last.
    second = client.post("/v1/keys", json={"scopes": ["admin"]}, headers=admin.headers).json()
    assert client.post(f"/v1/keys/{admin.id}/revoke", headers=admin.headers).status_code == 200
    headers = {"X-API-Key": second["key"]}
    _error(client.post(f"/v1/keys/{second['id']}/revoke", headers=headers), 409, "key_id")
    with session_factory(engine)() as session:
        assert session.get_one(ApiKey, second["id"]).revoked_at is None


@pytest.mark.postgres_only
def test_a_read_only_database_still_serves_reads(
    make_client: Any, database_url: str, issue: Any, engine: Engine
) -> None:
    """Recording a key's use is a write: on a database that refuses writes it is skipped
    (logged), so reads keep working; writes answer 503, never 500."""
    from charter.db.session import make_engine

    key = issue("alpha", ["admin"])  # never used: the first request would touch it
    read_only = make_engine(
        database_url, connect_args={"options": "-c default_transaction_read_only=on"}
    )
    try:
        client = make_client(engine_override=read_only)
        listed = client.get("/v1/constitutions", headers=key.headers)
        assert listed.status_code == 200, listed.text
        refused = client.post(
            "/v1/batches", json={"name": "b", "rows": [{"prompt": "p"}]}, headers=key.headers
        )
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"].isdigit()
    finally:
        read_only.dispose()
    with session_factory(engine)() as session:
        assert session.get_one(ApiKey, key.id).last_used_at is None  # nothing was written
