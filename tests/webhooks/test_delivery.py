"""Deliveries to a real local receiver: signatures, retries, hangs, restarts, resend.

``deliver_due`` is the function the sweeper calls each pass; it is driven by hand
here, with ``now`` moved forward to reach retries without waiting for them.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook, WebhookVerificationError

from charter.core.jobs import ItemState
from charter.db.models import (
    Dataset,
    DatasetVersion,
    Project,
    WebhookDelivery,
    WebhookEndpoint,
    WorkItem,
    utcnow,
)
from charter.db.session import make_engine, session_factory
from charter.queue import make_celery
from charter.settings import Settings
from charter.webhook_events import emit
from services.gateway.datasets import freezing
from tests.conftest import Api
from tests.webhooks.conftest import HANG, Receiver
from workers import leases
from workers.sweeper import sweep
from workers.webhook_delivery import _claim, deliver_due, http_client

Subscribe = Callable[..., dict[str, Any]]


def _rows(sessions: sessionmaker[Session], endpoint_id: str) -> list[WebhookDelivery]:
    with sessions() as session:
        query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
        return list(session.scalars(query.order_by(WebhookDelivery.created_at)))


def _log(client: TestClient, headers: dict[str, str], endpoint_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/webhooks/{endpoint_id}/deliveries", headers=headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _ping(client: TestClient, headers: dict[str, str], endpoint_id: str) -> dict[str, Any]:
    response = client.post(f"/v1/webhooks/{endpoint_id}/test", headers=headers)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def _cancelled_job(api: Api, headers: dict[str, str]) -> str:
    api.push_default(headers)
    batch = api.create_batch(headers, [{"prompt": "Is the sky blue?"}, {"prompt": "Why?"}])
    job = api.submit(headers, batch_id=batch["id"])
    cancelled = api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    return str(job["id"])


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _project_id(sessions: sessionmaker[Session], name: str = "alpha") -> str:
    with sessions() as session:
        return session.scalars(select(Project.id).where(Project.name == name)).one()


# --------------------------------------------------------------------------- emit


def test_emit_writes_one_row_per_subscribed_enabled_endpoint_in_the_callers_transaction(
    sessions: sessionmaker[Session], issue: Callable[..., Any]
) -> None:
    alpha, beta = issue("alpha").project_id, issue("beta").project_id
    with sessions() as session, session.begin():
        hooks = {
            name: WebhookEndpoint(
                project_id=project,
                url="http://127.0.0.1:9/",
                event_types=events,
                secret="whsec_AAAA",
                enabled=enabled,
            )
            for name, project, events, enabled in [
                ("subscribed", alpha, ["job.completed", "job.failed"], True),
                ("disabled", alpha, ["job.completed"], False),
                ("other-event", alpha, ["job.failed"], True),
                ("other-project", beta, ["job.completed"], True),
            ]
        }
        session.add_all(hooks.values())
    ids = {name: hook.id for name, hook in hooks.items()}
    with sessions() as session:  # rolled back: an event exists only with its change
        emit(session, alpha, "job.completed", {"job_id": "j1"})
        session.rollback()
    assert _rows(sessions, ids["subscribed"]) == []
    with sessions() as session, session.begin():
        emit(session, alpha, "job.completed", {"job_id": "j1"})
        with pytest.raises(ValueError, match="unknown webhook event"):
            emit(session, alpha, "job.exploded", {})
    [row] = _rows(sessions, ids["subscribed"])
    assert (row.status, row.attempts, row.event_type) == ("pending", 0, "job.completed")
    assert row.msg_id.startswith("msg_")
    assert row.payload["type"] == "job.completed" and row.payload["data"] == {"job_id": "j1"}
    assert "timestamp" in row.payload
    for name in ("disabled", "other-event", "other-project"):
        assert _rows(sessions, ids[name]) == [], name


# --------------------------------------------------------------------------- delivery


def test_a_cancelled_job_is_delivered_signed_and_logged(
    api: Api,
    admin_headers: dict[str, str],
    subscribe: Subscribe,
    receiver: Receiver,
    sessions: sessionmaker[Session],
    http: httpx.Client,
    hook_settings: Settings,
) -> None:
    hook = subscribe("/jobs", events=("job.cancelled", "job.completed"))
    job_id = _cancelled_job(api, admin_headers)
    assert receiver.received == []  # never sent inside the request
    assert deliver_due(sessions, http, hook_settings) == 1
    [got] = receiver.at("/jobs")
    assert got.verified, got.headers
    assert got.headers["content-type"] == "application/json"
    body = json.loads(got.body)
    assert body["type"] == "job.cancelled"
    assert body["data"]["job_id"] == job_id and body["data"]["status"] == "cancelled"
    assert body["data"]["counts"] == {ItemState.CANCELLED: 2}
    [entry] = _log(api.client, admin_headers, hook["id"])
    assert entry["status"] == "delivered" and entry["attempts"] == 1
    assert entry["last_status_code"] == 204 and entry["delivered_at"]
    assert entry["msg_id"] == got.headers["webhook-id"]
    assert deliver_due(sessions, http, hook_settings) == 0  # delivered once


def test_job_completion_emits_completed_or_failed_once(
    api: Api,
    admin_headers: dict[str, str],
    subscribe: Subscribe,
    sessions: sessionmaker[Session],
) -> None:
    hook = subscribe("/jobs", events=("job.completed", "job.failed"))
    api.push_default(admin_headers)
    outcomes = {}
    for final in (ItemState.DONE, ItemState.FAILED):
        batch = api.create_batch(admin_headers, [{"prompt": "a"}, {"prompt": "b"}])
        job = api.submit(admin_headers, batch_id=batch["id"])
        with sessions() as session, session.begin():
            session.execute(
                update(WorkItem).where(WorkItem.job_id == job["id"]).values(status=final)
            )
            assert leases.complete_if_done(session, job["id"])
        with sessions() as session, session.begin():  # a second sweep finds it final
            leases.complete_if_done(session, job["id"])
        outcomes[job["id"]] = final
    rows = _rows(sessions, hook["id"])
    assert len(rows) == 2
    for row in rows:
        final = outcomes[row.payload["data"]["job_id"]]
        expected = "job.completed" if final == ItemState.DONE else "job.failed"
        assert row.event_type == expected and row.payload["type"] == expected
        assert row.payload["data"]["counts"] == {final: 2}
        assert row.payload["data"]["status"] == "completed"


def test_training_runs_and_frozen_versions_emit(
    client: TestClient,
    admin_headers: dict[str, str],
    subscribe: Subscribe,
    sessions: sessionmaker[Session],
    settings: Settings,
) -> None:
    events = ("training_run.completed", "training_run.failed", "dataset_version.frozen")
    hook = subscribe("/all", events=events)
    project = _project_id(sessions)
    with sessions() as session, session.begin():
        dataset = Dataset(project_id=project, name="revisions", kind="sft")
        session.add(dataset)
        session.flush()
        session.add(DatasetVersion(dataset_id=dataset.id, version=1, filter={}, row_count=0))
        frozen = DatasetVersion(
            dataset_id=dataset.id,
            version=2,
            filter={},
            state="freezing",
            rows_total=0,
            lease_owner="me",
            lease_expires_at=utcnow() + timedelta(minutes=1),
        )
        session.add(frozen)
    with sessions() as session, session.begin():
        assert freezing.finish(session, frozen.id, "me", "0" * 64)
    run_ids = []
    for outcome in ("complete", "fail"):
        body = {"type": "sft", "dataset": "revisions@1", "base_model": "smollm2"}
        run = client.post("/v1/runs", json=body, headers=admin_headers).json()
        claimed = client.post("/v1/runs/claim", json={"owner": "t"}, headers=admin_headers)
        token = claimed.json()["lease_token"]
        uri = (settings.artifacts_dir.resolve() / "runs" / run["id"] / "model").as_uri()
        report = {"lease_token": token} | (
            {"artifact_uri": uri} if outcome == "complete" else {"error": "out of memory"}
        )
        done = client.post(f"/v1/runs/{run['id']}/{outcome}", json=report, headers=admin_headers)
        assert done.status_code == 200, done.text
        run_ids.append(run["id"])
    by_type = {r.event_type: r.payload["data"] for r in _rows(sessions, hook["id"])}
    assert set(by_type) == set(events)
    assert by_type["dataset_version.frozen"]["ref"] == "revisions@2"
    assert by_type["dataset_version.frozen"]["dataset_version_id"] == frozen.id
    assert by_type["training_run.completed"]["training_run_id"] == run_ids[0]
    assert by_type["training_run.completed"]["artifact_uri"].endswith("/model")
    assert by_type["training_run.failed"]["training_run_id"] == run_ids[1]
    assert by_type["training_run.failed"]["error"] == "out of memory"


def test_a_refused_delivery_is_retried_then_delivered(
    client: TestClient,
    admin_headers: dict[str, str],
    subscribe: Subscribe,
    receiver: Receiver,
    sessions: sessionmaker[Session],
    http: httpx.Client,
    hook_settings: Settings,
) -> None:
    hook = subscribe("/flaky", events=("job.completed",))
    receiver.scripts["/flaky"] = [500]
    _ping(client, admin_headers, hook["id"])
    t0 = utcnow()
    assert deliver_due(sessions, http, hook_settings, now=t0) == 1
    [entry] = _log(client, admin_headers, hook["id"])
    assert entry["status"] == "pending" and entry["attempts"] == 1
    assert entry["last_status_code"] == 500 and entry["last_error"].startswith("HTTP 500")
    assert deliver_due(sessions, http, hook_settings, now=t0) == 0  # backing off
    assert deliver_due(sessions, http, hook_settings, now=t0 + timedelta(minutes=5)) == 1
    [entry] = _log(client, admin_headers, hook["id"])
    assert entry["status"] == "delivered" and entry["attempts"] == 2
    assert (entry["last_status_code"], entry["last_error"]) == (204, None)
    first, second = receiver.at("/flaky")
    assert first.verified and second.verified
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == entry["msg_id"]


def test_connection_refused_is_retried_after_the_url_is_fixed(
    client: TestClient,
    admin_headers: dict[str, str],
    subscribe: Subscribe,
    receiver: Receiver,
    sessions: sessionmaker[Session],
    http: httpx.Client,
    hook_settings: Settings,
) -> None:
    hook = subscribe("/late")
    dead = f"http://127.0.0.1:{_closed_port()}/late"
    fixed = client.patch(f"/v1/webhooks/{hook['id']}", json={"url": dead}, headers=admin_headers)
    assert fixed.status_code == 200
    _ping(client, admin_headers, hook["id"])
    t0 = utcnow()
    assert deliver_due(sessions, http, hook_settings, now=t0) == 1
    [entry] = _log(client, admin_headers, hook["id"])
    assert entry["status"] == "pending" and entry["last_status_code"] is None
    assert "ConnectError" in entry["last_error"]
    back = {"url": receiver.url("/late")}
    assert client.patch(f"/v1/webhooks/{hook['id']}", json=back, headers=admin_headers).is_success
    assert deliver_due(sessions, http, hook_settings, now=t0 + timedelta(hours=1)) == 1
    assert _log(client, admin_headers, hook["id"])[0]["status"] == "delivered"
    assert [r.verified for r in receiver.at("/late")] == [True]


def test_retries_stop_after_the_bounded_time_and_resend_starts_again(
    client: TestClient,
    admin_headers: dict[str, str],
    subscribe: Subscribe,
    receiver: Receiver,
    sessions: sessionmaker[Session],
    http: httpx.Client,
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(webhook_timeout_seconds=1.0, webhook_max_retry_hours=1.0)
    hook = subscribe("/down")
    receiver.scripts["/down"] = [503, 503]
    _ping(client, admin_headers, hook["id"])
    t0 = utcnow()
    assert deliver_due(sessions, http, settings, now=t0) == 1
    assert deliver_due(sessions, http, settings, now=t0 + timedelta(seconds=3599)) == 1
    [entry] = _log(client, admin_headers, hook["id"])
    assert (entry["status"], entry["attempts"], entry["last_status_code"]) == ("failed", 2, 503)
    assert deliver_due(sessions, http, settings, now=t0 + timedelta(days=2)) == 0  # given up
    failed = client.get(
        f"/v1/webhooks/{hook['id']}/deliveries", params={"status": "failed"}, headers=admin_headers
    ).json()["items"]
    assert [d["id"] for d in failed] == [entry["id"]]

    resent = client.post(f"/v1/webhooks/deliveries/{entry['id']}/resend", headers=admin_headers)
    assert resent.status_code == 202, resent.text
    assert (resent.json()["status"], resent.json()["attempts"]) == ("pending", 0)
    assert deliver_due(sessions, http, settings) == 1
    [entry] = _log(client, admin_headers, hook["id"])
    assert (entry["status"], entry["attempts"], entry["last_status_code"]) == ("delivered", 1, 204)
    assert len(receiver.at("/down")) == 3
    assert all(r.verified for r in receiver.at("/down"))


def test_a_hanging_receiver_does_not_block_another_endpoint(
    client: TestClient,
    admin_headers: dict[str, str],
    subscribe: Subscribe,
    receiver: Receiver,
    sessions: sessionmaker[Session],
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(webhook_timeout_seconds=3.0, webhook_concurrency=4)
    slow, fast = subscribe("/slow"), subscribe("/fast")
    receiver.scripts["/slow"] = [HANG]
    _ping(client, admin_headers, slow["id"])  # due first
    _ping(client, admin_headers, fast["id"])
    started = time.monotonic()
    with http_client(settings) as http:
        assert deliver_due(sessions, http, settings) == 2
    elapsed = time.monotonic() - started
    [got] = receiver.at("/fast")
    assert got.verified
    assert got.at - started < 2.0, "the fast endpoint waited for the hanging one"
    assert elapsed < 3.0 + 2.0  # the hang costs one timeout, not one per delivery
    assert _log(client, admin_headers, fast["id"])[0]["status"] == "delivered"
    [hung] = _log(client, admin_headers, slow["id"])
    assert hung["status"] == "pending" and "Timeout" in hung["last_error"]


def test_redirects_are_not_followed_and_non_http_urls_are_never_called(
    client: TestClient,
    admin_headers: dict[str, str],
    subscribe: Subscribe,
    receiver: Receiver,
    sessions: sessionmaker[Session],
    http: httpx.Client,
    hook_settings: Settings,
) -> None:
    hook = subscribe("/moved")
    receiver.scripts["/moved"] = [307]
    _ping(client, admin_headers, hook["id"])
    with sessions() as session, session.begin():  # a row the API would have refused
        file_hook = WebhookEndpoint(
            project_id=_project_id(sessions),
            url="file:///etc/passwd",
            event_types=["job.completed"],
            secret="whsec_AAAA",
            enabled=True,
        )
        session.add(file_hook)
        session.flush()
        emit(session, file_hook.project_id, "job.completed", {"job_id": "j"})
    assert deliver_due(sessions, http, hook_settings) == 2
    assert len(receiver.received) == 1  # the 307 was not followed
    [entry] = _log(client, admin_headers, hook["id"])
    assert (entry["status"], entry["last_status_code"]) == ("pending", 307)
    [refused] = _rows(sessions, file_hook.id)
    assert refused.status == "pending" and refused.last_error.startswith("refused")


# --------------------------------------------------------------------------- restarts


def test_no_delivery_is_lost_across_a_sweeper_restart(
    client: TestClient,
    admin_headers: dict[str, str],
    subscribe: Subscribe,
    receiver: Receiver,
    sessions: sessionmaker[Session],
    hook_settings: Settings,
    database_url: str,
) -> None:
    hook = subscribe("/restart")
    pings = {_ping(client, admin_headers, hook["id"])["msg_id"] for _ in range(3)}
    t0 = utcnow()
    # The first sweeper claims the rows and dies before sending (its lease is committed).
    assert len(_claim(sessions, hook_settings, t0, lease_s=60)) == 3
    # A new process: its own engine, its own client.
    engine = make_engine(database_url)
    try:
        fresh = session_factory(engine)
        with http_client(hook_settings) as http:
            assert deliver_due(fresh, http, hook_settings, now=t0) == 0  # still leased
            assert deliver_due(fresh, http, hook_settings, now=t0 + timedelta(seconds=61)) == 3
    finally:
        engine.dispose()
    assert {r.headers["webhook-id"] for r in receiver.at("/restart")} == pings
    assert all(r.verified for r in receiver.received)
    assert {d["status"] for d in _log(client, admin_headers, hook["id"])} == {"delivered"}


def test_events_committed_by_a_request_are_delivered_after_a_gateway_restart(
    make_client: Callable[..., TestClient],
    admin_headers: dict[str, str],
    default_document: dict[str, Any],
    receiver: Receiver,
    hook_settings: Settings,
) -> None:
    first = make_client()
    created = first.post(
        "/v1/webhooks",
        json={"url": receiver.url("/gw"), "events": ["job.cancelled"]},
        headers=admin_headers,
    ).json()
    receiver.secrets["/gw"] = created["secret"]
    job_id = _cancelled_job(Api(first, default_document), admin_headers)
    first.__exit__(None, None, None)  # the gateway stops

    second = make_client()
    [entry] = _log(second, admin_headers, created["id"])
    assert entry["status"] == "pending"
    sessions = second.app.state.sessions  # type: ignore[attr-defined]
    with http_client(hook_settings) as http:
        report = sweep(sessions, make_celery(hook_settings), hook_settings, http)
    assert report.webhooks_attempted == 1
    [got] = receiver.at("/gw")
    assert got.verified and json.loads(got.body)["data"]["job_id"] == job_id
    [entry] = _log(second, admin_headers, created["id"])
    assert (entry["status"], entry["attempts"], entry["last_status_code"]) == ("delivered", 1, 204)


@pytest.mark.postgres_only
def test_concurrent_sweepers_skip_each_others_rows(
    client: TestClient,
    admin_headers: dict[str, str],
    subscribe: Subscribe,
    receiver: Receiver,
    sessions: sessionmaker[Session],
    http: httpx.Client,
    hook_settings: Settings,
) -> None:
    hook = subscribe("/shared")
    _ping(client, admin_headers, hook["id"])
    with sessions() as held, held.begin():  # another sweeper, mid-claim, holds the row
        assert len(held.scalars(select(WebhookDelivery).with_for_update()).all()) == 1
        assert deliver_due(sessions, http, hook_settings) == 0  # skipped, not waited for
    assert deliver_due(sessions, http, hook_settings) == 1
    assert len(receiver.at("/shared")) == 1


def test_a_rotated_secret_signs_the_next_attempts(
    client: TestClient,
    admin_headers: dict[str, str],
    subscribe: Subscribe,
    receiver: Receiver,
    sessions: sessionmaker[Session],
    http: httpx.Client,
    hook_settings: Settings,
) -> None:
    hook = subscribe("/rotated")
    receiver.scripts["/rotated"] = [500]
    _ping(client, admin_headers, hook["id"])
    t0 = utcnow()
    assert deliver_due(sessions, http, hook_settings, now=t0) == 1
    rotated = client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=admin_headers)
    old, receiver.secrets["/rotated"] = receiver.secrets["/rotated"], rotated.json()["secret"]
    assert deliver_due(sessions, http, hook_settings, now=t0 + timedelta(hours=1)) == 1
    first, second = receiver.at("/rotated")
    assert first.verified and second.verified  # each checked with the secret of its time
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(second.body, second.headers)


def test_deleting_an_endpoint_drops_its_pending_deliveries(
    client: TestClient,
    admin_headers: dict[str, str],
    subscribe: Subscribe,
    receiver: Receiver,
    sessions: sessionmaker[Session],
    http: httpx.Client,
    hook_settings: Settings,
) -> None:
    hook = subscribe("/gone")
    _ping(client, admin_headers, hook["id"])
    assert client.delete(f"/v1/webhooks/{hook['id']}", headers=admin_headers).status_code == 204
    assert _rows(sessions, hook["id"]) == []
    assert deliver_due(sessions, http, hook_settings) == 0
    assert receiver.received == []
