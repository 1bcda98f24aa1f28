"""The audit log: every state-changing call is one row, written with the call's own
transaction (a success) or after its rollback (a refusal, a failure), readable by the
project's admins only, and not editable through the API."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta, timezone
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from charter import keys
from charter.db.models import AuditEvent, IdempotencyRecord, PromptBatch, utcnow
from charter.db.session import session_factory
from charter.queue import make_celery
from tests.conftest import Api, IssuedKey
from workers.sweeper import prune_audit, sweep

ORIGIN = {"Origin": "http://testserver"}
ROWS = [{"prompt": "p1"}, {"prompt": "p2"}]


def _events(engine: Engine, route: str | None = None) -> list[AuditEvent]:
    with session_factory(engine)() as session:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if route is not None:
            query = query.where(AuditEvent.route == route)
        return list(session.scalars(query))


def _prefix(key: IssuedKey) -> str:
    prefix = keys.prefix_of(key.key)
    assert prefix is not None
    return prefix


def _only(engine: Engine, route: str) -> AuditEvent:
    rows = _events(engine, route)
    assert len(rows) == 1, [(r.route, r.outcome, r.replayed) for r in rows]
    return rows[0]


def test_a_submit_a_cancel_and_a_key_creation_are_each_logged_once(
    client: TestClient, api: Api, issue: Callable[..., IssuedKey], engine: Engine
) -> None:
    admin = issue("alpha", ("admin",))
    api.push_default(admin.headers)
    batch = api.create_batch(admin.headers, ROWS)
    submitted = client.post(
        "/v1/jobs",
        json={"type": "sl_cai", "constitution": "default", "model": "m", "batch_id": batch["id"]},
        headers={**admin.headers, "X-Request-ID": "req-submit"},
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    cancelled = client.post(
        f"/v1/jobs/{job_id}/cancel", headers={**admin.headers, "X-Request-ID": "req-cancel"}
    )
    assert cancelled.status_code == 200, cancelled.text
    made = client.post(
        "/v1/keys",
        json={"scopes": ["read"], "name": "ci"},
        headers={**admin.headers, "X-Request-ID": "req-key"},
    )
    assert made.status_code == 201, made.text
    client.get("/v1/jobs", headers=admin.headers)  # a read: not audited

    submit = _only(engine, "/v1/jobs")
    assert (submit.method, submit.path, submit.status_code) == ("POST", "/v1/jobs", 202)
    assert submit.object_ids == {"id": job_id}
    assert (submit.outcome, submit.request_id, submit.replayed) == (
        "succeeded",
        "req-submit",
        False,
    )
    assert (submit.project_id, submit.api_key_id) == (admin.project_id, admin.id)
    assert submit.key_prefix == _prefix(admin)
    assert submit.error_code is None and submit.error_detail is None

    cancel = _only(engine, "/v1/jobs/{job_id}/cancel")
    assert cancel.path == f"/v1/jobs/{job_id}/cancel"
    assert cancel.object_ids == {"job_id": job_id, "id": job_id}
    assert (cancel.outcome, cancel.status_code, cancel.request_id) == (
        "succeeded",
        200,
        "req-cancel",
    )

    key = _only(engine, "/v1/keys")
    assert key.object_ids == {"id": made.json()["id"]}
    assert (key.outcome, key.status_code, key.request_id) == ("succeeded", 201, "req-key")
    assert made.json()["key"] not in str(key.error_detail) + str(key.object_ids)
    # The set-up writes are there too, and nothing else (no read, no duplicate).
    assert sorted(e.route for e in _events(engine)) == sorted(
        ["/v1/constitutions", "/v1/batches", "/v1/jobs", "/v1/jobs/{job_id}/cancel", "/v1/keys"]
    )
    # What the API shows is what was stored.
    page = client.get("/v1/audit", headers=admin.headers).json()
    assert [item["route"] for item in page["items"]][:3] == [
        "/v1/keys",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs",
    ]
    shown = page["items"][1]
    assert shown["request_id"] == "req-cancel" and shown["key_prefix"] == _prefix(admin)
    assert shown["object_ids"] == {"job_id": job_id, "id": job_id}
    assert "project_id" not in shown


def test_refusals_are_logged_with_their_error(
    client: TestClient, api: Api, issue: Callable[..., IssuedKey], engine: Engine
) -> None:
    admin = issue("alpha", ("admin",))
    reader = issue("alpha", ("read",))
    bad_json = client.post(
        "/v1/batches",
        content=b'{"rows": [',
        headers={**admin.headers, "Content-Type": "application/json", "X-Request-ID": "r1"},
    )
    assert bad_json.status_code == 422
    bad_shape = client.post("/v1/batches", json={"rows": "nope"}, headers=admin.headers)
    assert bad_shape.status_code == 422
    no_scope = client.post("/v1/batches", json={"rows": ROWS}, headers=reader.headers)
    assert no_scope.status_code == 403
    missing = client.post("/v1/jobs/nope/cancel", headers=admin.headers)
    assert missing.status_code == 404
    unauthenticated = client.post("/v1/batches", json={"rows": ROWS}, headers={"X-API-Key": "x"})
    assert unauthenticated.status_code == 401

    rows = _events(engine)
    assert [(r.route, r.status_code, r.outcome, r.error_code) for r in rows] == [
        ("/v1/batches", 422, "refused", "invalid"),
        ("/v1/batches", 422, "refused", "validation_error"),
        ("/v1/batches", 403, "refused", "forbidden"),
        ("/v1/jobs/{job_id}/cancel", 404, "refused", "not_found"),
    ]  # the 401 reached no key: it is left to the access log
    assert rows[0].request_id == "r1" and rows[0].error_detail == bad_json.json()["detail"]
    assert rows[1].error_detail == bad_shape.json()["detail"] and "rows" in str(
        rows[1].error_detail
    )
    assert rows[2].key_prefix == _prefix(reader) and "submit" in str(rows[2].error_detail)
    assert rows[3].object_ids == {"job_id": "nope"} and rows[3].api_key_id == admin.id
    assert all(r.project_id == admin.project_id for r in rows)


def test_a_replay_is_marked_and_does_not_duplicate_the_write(
    client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    headers = {**admin_headers, "Idempotency-Key": "once"}
    first = client.post("/v1/batches", json={"rows": ROWS}, headers=headers)
    again = client.post("/v1/batches", json={"rows": ROWS}, headers=headers)
    assert again.headers["Idempotent-Replayed"] == "true"
    write, replay = _events(engine, "/v1/batches")
    assert (write.replayed, write.outcome, write.idempotency_key) == (False, "succeeded", "once")
    assert write.object_ids == {"id": first.json()["id"]}
    assert (replay.replayed, replay.idempotency_key, replay.status_code) == (True, "once", 201)
    assert replay.request_id != write.request_id
    listed = client.get("/v1/audit", params={"route": "/v1/batches"}, headers=admin_headers)
    assert [item["replayed"] for item in listed.json()["items"]] == [True, False]


def test_concurrent_duplicates_leave_one_write_event(
    api: Api, client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    # A fresh key's first request locks its row to record the use; concurrent requests
    # inserting Idempotency-Key records (which reference the key) can then deadlock on
    # PostgreSQL, with or without the audit log. Used once, the key is not touched again.
    assert client.get("/v1/audit", headers=admin_headers).status_code == 200
    headers = {**admin_headers, "Idempotency-Key": "race"}

    def post(_: int) -> Any:
        return client.post("/v1/batches", json={"rows": ROWS}, headers=headers)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    rows = _events(engine, "/v1/batches")
    assert len(rows) == 8
    writes = [r for r in rows if not r.replayed]
    assert len(writes) == 1 and writes[0].outcome == "succeeded"
    assert writes[0].object_ids == {"id": responses[0].json()["id"]}


@pytest.mark.postgres_only
def test_a_retry_that_commits_first_takes_the_write_event(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    """The first call's writes and event are flushed only after its twin has committed:
    its commit loses the race on the Idempotency-Key, rolls back (event included) and
    answers the twin's response as a replay, recorded as such."""
    assert client.get("/v1/audit", headers=admin_headers).status_code == 200  # see above
    headers = {**admin_headers, "Idempotency-Key": "twin", "X-Request-ID": "loser"}
    real: Callable[[], Session] = app.state.sessions
    twins: list[Any] = []

    def sessions() -> Session:
        session = real()

        @event.listens_for(session, "before_flush")
        def twin_first(flushing: Session, *_: Any) -> None:
            pending = any(isinstance(o, IdempotencyRecord) for o in flushing.new)
            if pending and not twins:
                twins.append(None)
                twin = {**headers, "X-Request-ID": "winner"}
                twins[0] = client.post("/v1/batches", json={"rows": ROWS}, headers=twin)

        return session

    app.state.sessions = sessions
    loser = client.post("/v1/batches", json={"rows": ROWS}, headers=headers)
    assert twins and twins[0].status_code == 201, twins
    assert loser.status_code == 201 and loser.headers["Idempotent-Replayed"] == "true"
    assert loser.json() == twins[0].json()
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(PromptBatch)) == 1
    rows = _events(engine, "/v1/batches")
    assert [(r.request_id, r.outcome, r.replayed) for r in rows] == [
        ("winner", "succeeded", False),
        ("loser", "succeeded", True),
    ]


def test_a_call_that_fails_after_its_writes_leaves_no_success(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    """The COMMIT is lost (the batch and its event roll back): the event that remains
    says the call failed, and nothing says it succeeded."""
    real: Callable[[], Session] = app.state.sessions
    lost: list[int] = []

    def sessions() -> Session:
        session = real()
        commit = session.commit

        def lossy() -> None:
            if lost:
                return commit()
            lost.append(1)
            # The success's event is in this transaction, with the batch it records.
            written = select(func.count()).where(AuditEvent.outcome == "succeeded")
            assert session.scalar(written) == 1, "no event to roll back"
            session.rollback()
            cause = psycopg.OperationalError("server closed the connection unexpectedly")
            raise OperationalError("COMMIT", {}, cause)

        session.commit = lossy  # type: ignore[method-assign]
        return session

    app.state.sessions = sessions
    response = client.post("/v1/batches", json={"rows": ROWS}, headers=admin_headers)
    assert lost and response.status_code == 503, response.text
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(PromptBatch)) == 0
    [row] = _events(engine)
    assert (row.route, row.outcome, row.status_code, row.error_code) == (
        "/v1/batches",
        "failed",
        503,
        "unavailable",
    )


def test_a_failed_audit_write_never_changes_the_answer(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    """A refusal's event is written after the rollback; when that write fails too (here
    every COMMIT after the first refusal's rollback fails), the refusal still answers."""
    real: Callable[[], Session] = app.state.sessions

    def sessions() -> Session:
        session = real()

        def broken() -> None:
            session.rollback()
            raise OperationalError("COMMIT", {}, psycopg.OperationalError("disk full"))

        session.commit = broken  # type: ignore[method-assign]
        return session

    app.state.sessions = sessions
    response = client.post("/v1/jobs/nope/cancel", headers=admin_headers)
    assert response.status_code == 404 and response.json()["field"] == "job_id"
    assert _events(engine) == []


def test_the_dashboard_cancel_is_audited(
    client: TestClient, api: Api, issue: Callable[..., IssuedKey], engine: Engine
) -> None:
    admin = issue("alpha", ("admin",))
    api.push_default(admin.headers)
    batch = api.create_batch(admin.headers, ROWS)
    job = api.submit(admin.headers, batch_id=batch["id"], model="m")
    login = client.post(
        "/dashboard/login", data={"api_key": admin.key}, headers=ORIGIN, follow_redirects=False
    )
    assert login.status_code == 303
    page = client.get("/dashboard/").text
    marker = 'name="csrf" value="'
    csrf = page[page.index(marker) + len(marker) :].split('"', 1)[0]
    url = f"/dashboard/jobs/{job['id']}/cancel"
    refused = client.post(url, data={"csrf": "stale"}, headers=ORIGIN, follow_redirects=False)
    assert refused.status_code == 403
    done = client.post(
        url, data={"csrf": csrf}, headers={**ORIGIN, "X-Request-ID": "dash"}, follow_redirects=False
    )
    assert done.status_code == 303
    bad, good = _events(engine, "/dashboard/jobs/{job_id}/cancel")
    assert (bad.outcome, bad.error_code, bad.status_code) == ("refused", "forbidden", 403)
    assert (good.outcome, good.status_code, good.request_id) == ("succeeded", 303, "dash")
    assert good.object_ids == {"job_id": job["id"]} and good.key_prefix == _prefix(admin)


def test_filters_and_paging(
    client: TestClient, issue: Callable[..., IssuedKey], engine: Engine
) -> None:
    admin = issue("alpha", ("admin",))
    submitter = issue("alpha", ("submit",))
    made = [
        client.post("/v1/batches", json={"rows": ROWS}, headers=submitter.headers) for _ in "abc"
    ]
    client.post("/v1/jobs/nope/cancel", headers=submitter.headers)
    client.post("/v1/keys/nope/revoke", headers=admin.headers)

    def listed(**params: Any) -> list[dict[str, Any]]:
        response = client.get("/v1/audit", params=params, headers=admin.headers)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    assert len(listed()) == 5
    assert [e["status_code"] for e in listed(route="/v1/batches")] == [201, 201, 201]
    assert {e["route"] for e in listed(outcome="refused")} == {
        "/v1/jobs/{job_id}/cancel",
        "/v1/keys/{key_id}/revoke",
    }
    assert [e["route"] for e in listed(key_prefix=_prefix(admin))] == ["/v1/keys/{key_id}/revoke"]
    assert len(listed(key_prefix=_prefix(submitter))) == 4
    second = made[1].json()["id"]
    assert [e["object_ids"]["id"] for e in listed(object_id=second)] == [second]
    assert [e["path"] for e in listed(object_id="nope")] == [
        "/v1/keys/nope/revoke",
        "/v1/jobs/nope/cancel",
    ]
    assert listed(object_id="absent") == []

    # Time windows (RFC 3339): since inclusive, until exclusive, any offset.
    with session_factory(engine)() as session, session.begin():
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.route == "/v1/batches")
            .values(created_at=utcnow() - timedelta(days=3))
        )
    day_ago = utcnow() - timedelta(days=1)
    assert len(listed(since=day_ago.isoformat().replace("+00:00", "Z"))) == 2
    assert len(listed(until=day_ago.isoformat())) == 3
    in_tokyo = day_ago.astimezone(timezone(timedelta(hours=9))).isoformat()
    assert len(listed(until=in_tokyo)) == 3
    assert len(listed(since="2020-01-01T00:00:00Z", until="2020-01-02T00:00:00+01:00")) == 0
    assert listed(since="2026-12-05T00:00:00Z", until="2026-12-01T00:00:00Z") == []
    naive = day_ago.replace(tzinfo=None).isoformat()
    for name, value in (
        ("since", "yesterday"),
        ("until", "2026-13-01T00:00:00Z"),
        ("since", naive),
    ):
        response = client.get("/v1/audit", params={name: value}, headers=admin.headers)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == name and "RFC 3339" in response.json()["detail"]
    bad = client.get("/v1/audit", params={"outcome": "maybe"}, headers=admin.headers)
    assert bad.status_code == 422 and "outcome" in bad.json()["field"]

    # Cursor paging: newest first, each row once, no row skipped.
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        body = client.get("/v1/audit", params=params, headers=admin.headers).json()
        assert len(body["items"]) <= 2
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted((e.id for e in _events(engine)), reverse=True) and len(seen) == 5
    garbled = client.get("/v1/audit", params={"cursor": "%%%"}, headers=admin.headers)
    assert garbled.status_code == 422 and garbled.json()["field"] == "cursor"


def test_only_the_projects_admins_read_it(
    client: TestClient, issue: Callable[..., IssuedKey], engine: Engine
) -> None:
    alpha = issue("alpha", ("admin",))
    beta = issue("beta", ("admin",))
    client.post("/v1/batches", json={"rows": ROWS}, headers=alpha.headers)
    client.post("/v1/batches", json={"rows": ROWS}, headers=beta.headers)
    for scopes in (("read",), ("submit",), ("read", "submit", "train")):
        response = client.get("/v1/audit", headers=issue("alpha", scopes).headers)
        assert response.status_code == 403 and "admin" in response.json()["detail"], scopes
    mine = client.get("/v1/audit", headers=beta.headers).json()["items"]
    assert [e["key_prefix"] for e in mine] == [_prefix(beta)]
    alpha_batch = _events(engine)[0].object_ids["id"]
    assert (
        client.get("/v1/audit", params={"object_id": alpha_batch}, headers=beta.headers).json()[
            "items"
        ]
        == []
    )
    assert client.get("/v1/audit").status_code == 401


def test_the_api_offers_no_way_to_edit_it(
    client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    client.post("/v1/batches", json={"rows": ROWS}, headers=admin_headers)
    [row] = _events(engine)
    document = client.get("/openapi.json").json()
    audit_paths = {p: ops for p, ops in document["paths"].items() if p.startswith("/v1/audit")}
    assert audit_paths and all(set(ops) <= {"get", "parameters"} for ops in audit_paths.values())
    for route in client.app.routes:  # type: ignore[attr-defined]
        if getattr(route, "path", "").startswith("/v1/audit"):
            assert set(route.methods) <= {"GET", "HEAD"}, route.path
    for method in ("PATCH", "PUT", "DELETE", "POST"):
        for path in ("/v1/audit", f"/v1/audit/{row.id}"):
            response = client.request(method, path, headers=admin_headers, json={"outcome": "x"})
            assert response.status_code in (404, 405), (method, path, response.status_code)
    assert _events(engine)[0].outcome == row.outcome == "succeeded"


def test_the_sweeper_keeps_the_configured_days(
    client: TestClient,
    admin_headers: dict[str, str],
    engine: Engine,
    make_settings: Callable[..., Any],
) -> None:
    for _ in range(5):
        client.post("/v1/batches", json={"rows": ROWS}, headers=admin_headers)
    ids = [e.id for e in _events(engine)]
    with session_factory(engine)() as session, session.begin():
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.id.in_(ids[:3]))
            .values(created_at=utcnow() - timedelta(days=40))
        )
    forever = make_settings()
    assert forever.audit_retention_days is None
    assert sweep(session_factory(engine), make_celery(forever), forever).audit_pruned == 0
    assert len(_events(engine)) == 5
    # In batches: two rows per transaction still deletes all three.
    assert prune_audit(session_factory(engine), utcnow() - timedelta(days=30), batch=2) == 3
    assert [e.id for e in _events(engine)] == ids[3:]
    month = make_settings(audit_retention_days=30)
    with session_factory(engine)() as session, session.begin():
        session.execute(
            update(AuditEvent)
            .where(AuditEvent.id == ids[3])
            .values(created_at=utcnow() - timedelta(days=31))
        )
    assert sweep(session_factory(engine), make_celery(month), month).audit_pruned == 1
    assert [e.id for e in _events(engine)] == ids[4:]
