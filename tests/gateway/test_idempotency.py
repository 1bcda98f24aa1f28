"""``Idempotency-Key``: scoped before replay, bound to one API key, never a secret, expiring.

Regression tests for a replay that answered a *read* key with the body of an admin's
key creation (plaintext secret included), for records that stored that secret, and
for records that never expired; plus concurrent duplicates creating one object.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update

from charter import idempotency
from charter.db.models import ApiKey, IdempotencyRecord, Job, PromptBatch, utcnow
from charter.db.session import session_factory
from charter.queue import make_celery
from charter.settings import Settings
from workers.sweeper import sweep

SPEC = {"type": "sl_cai", "constitution": "default", "model": "smollm2", "seed": 7}


def _count(engine: Engine, model: Any) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _records(engine: Engine) -> list[IdempotencyRecord]:
    with session_factory(engine)() as session:
        return list(session.scalars(select(IdempotencyRecord)))


def test_replay_checks_the_scope_first(
    client: TestClient, admin_headers: dict[str, str], make_headers: Any, engine: Engine
) -> None:
    body = {"scopes": ["admin"], "name": "ops"}
    made = client.post("/v1/keys", json=body, headers={**admin_headers, "Idempotency-Key": "k1"})
    assert made.status_code == 201, made.text
    secret = made.json()["key"]
    reader = {**make_headers("alpha", "read"), "Idempotency-Key": "k1"}
    stolen = client.post("/v1/keys", json=body, headers=reader)
    assert stolen.status_code == 403, stolen.text
    assert secret not in stolen.text and made.json()["id"] not in stolen.text
    assert _count(engine, ApiKey) == 3  # the admin, the new key, the reader


def test_records_are_bound_to_the_key_that_made_them(
    client: TestClient, admin_headers: dict[str, str], make_headers: Any, engine: Engine
) -> None:
    body = {"name": "same", "rows": [{"prompt": "x"}]}
    first = client.post("/v1/batches", json=body, headers={**admin_headers, "Idempotency-Key": "b"})
    other = {**make_headers("alpha", "submit"), "Idempotency-Key": "b"}
    second = client.post("/v1/batches", json=body, headers=other)
    assert (first.status_code, second.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]
    # The same key replays its own record, including to the same key later.
    again = client.post("/v1/batches", json=body, headers=other)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == second.json()
    assert _count(engine, PromptBatch) == 2
    records = _records(engine)
    assert len(records) == 2 and len({r.api_key_id for r in records}) == 2


def test_a_secret_is_never_stored_nor_replayed(
    client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    headers = {**admin_headers, "Idempotency-Key": "mint"}
    made = client.post("/v1/keys", json={"scopes": ["read"]}, headers=headers)
    assert made.status_code == 201, made.text
    secret = made.json()["key"]
    [record] = _records(engine)
    assert record.redacted and secret not in record.response_body
    assert f'"key": "{idempotency.REDACTED}"' in record.response_body
    retry = client.post("/v1/keys", json={"scopes": ["read"]}, headers=headers)
    assert retry.status_code == 409, retry.text
    assert retry.json()["field"] == "Idempotency-Key"
    assert made.json()["id"] in retry.json()["detail"] and secret not in retry.text
    assert len(client.get("/v1/keys", headers=admin_headers).json()) == 2  # not a third


def test_records_expire_after_the_ttl(
    make_client: Any, admin_headers: dict[str, str], engine: Engine, settings: Settings
) -> None:
    client = make_client(idempotency_ttl_seconds=3600)
    body = {"rows": [{"prompt": "x"}]}
    headers = {**admin_headers, "Idempotency-Key": "old"}
    first = client.post("/v1/batches", json=body, headers=headers)
    [record] = _records(engine)
    lifetime = record.expires_at - record.created_at
    assert timedelta(seconds=3599) < lifetime <= timedelta(seconds=3601)
    with session_factory(engine)() as session, session.begin():
        session.execute(
            update(IdempotencyRecord).values(expires_at=utcnow() - timedelta(seconds=1))
        )
    # Expired: the same key and body run again, as a new request.
    second = client.post("/v1/batches", json=body, headers=headers)
    assert second.status_code == 201 and "Idempotent-Replayed" not in second.headers
    assert second.json()["id"] != first.json()["id"]
    assert len(_records(engine)) == 1  # the expired record was replaced, not kept


def test_the_sweeper_deletes_expired_records(
    client: TestClient, admin_headers: dict[str, str], engine: Engine, settings: Settings
) -> None:
    for n in range(3):
        headers = {**admin_headers, "Idempotency-Key": f"k{n}"}
        assert client.post("/v1/batches", json={"rows": [{"prompt": "x"}]}, headers=headers)
    with session_factory(engine)() as session, session.begin():
        session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key != "k2")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    report = sweep(session_factory(engine), make_celery(settings), settings)
    assert report.idempotency_pruned == 2
    assert [r.key for r in _records(engine)] == ["k2"]


def test_concurrent_duplicates_create_one_object(
    api: Any, client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    api.push_default(admin_headers)
    batch = api.create_batch(admin_headers, [{"prompt": f"p{i}"} for i in range(3)])
    body = {**SPEC, "batch_id": batch["id"]}
    headers = {**admin_headers, "Idempotency-Key": "race"}

    def post(_: int) -> Any:
        return client.post("/v1/jobs", json=body, headers=headers)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))
    assert all(r.status_code == 202 for r in responses), [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert _count(engine, Job) == 1
    assert len(_records(engine)) == 1


def test_different_request_same_key_is_422(
    client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    headers = {**admin_headers, "Idempotency-Key": "once"}
    assert client.post("/v1/batches", json={"rows": [{"prompt": "a"}]}, headers=headers)
    changed = client.post("/v1/batches", json={"rows": [{"prompt": "b"}]}, headers=headers)
    assert changed.status_code == 422 and changed.json()["field"] == "Idempotency-Key"
    assert _count(engine, PromptBatch) == 1


def test_concurrent_first_uses_of_a_key_never_deadlock(
    client: TestClient, make_headers: Any
) -> None:
    """A key's first request locks its row to record the use while the same key's other
    requests insert rows that reference it (idempotency records, audit events). The lock
    is FOR NO KEY UPDATE, which their foreign-key checks do not wait for: with FOR UPDATE,
    about one round in three ended in a deadlock answered 503 on PostgreSQL."""
    for round_ in range(5):
        headers = make_headers("alpha", "submit") | {"Idempotency-Key": f"first-{round_}"}

        def post(_: int, headers: dict[str, str] = headers) -> Any:
            return client.post("/v1/batches", json={"rows": [{"prompt": "hi"}]}, headers=headers)

        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(post, range(8)))
        assert [r.status_code for r in responses] == [201] * 8, [r.text for r in responses]
        assert len({r.json()["id"] for r in responses}) == 1
