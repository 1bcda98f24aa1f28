"""A committed request answers its success, whatever runs after the commit.

Each after-commit hook (the job's outbox publish, the dataset's freezer wake, any
hook a route registers) is made to raise, with the kinds of error that would
otherwise become a 500, a 503 or a CharterError's status. The client must get
its 2xx, the resource must exist exactly once (an Idempotency-Key retry replays
it, never makes a second), the failure must be logged, and the work the hook
would have started must be done by the pass that repairs it later (the sweeper
publishes the job; a read of the version wakes a freezer).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, Request, status
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import OperationalError

from charter.db.models import DatasetVersion, IdempotencyRecord, Job, PromptBatch, WorkItem
from charter.db.session import session_factory
from charter.errors import Conflict, Unavailable
from services.gateway.batches import service as batches
from services.gateway.deps import SessionDep, SubmitKey
from services.gateway.unit_of_work import UnitOfWorkRoute, after_commit
from tests.gateway.test_datasets_api import Corpus, corpus, wait_ready
from workers.sweeper import sweep

__all__ = ["corpus"]  # the fixture, shared with test_datasets_api

FAILURES = {
    "bug": RuntimeError("can't start new thread"),
    "database": OperationalError("SELECT 1", {}, Exception("server closed the connection")),
    "unavailable": Unavailable("broker unavailable"),
    "conflict": Conflict("a charter error raised by a hook"),
}
ROUTING_LOG = "services.gateway.unit_of_work"


def _raises(exc: Exception) -> Any:
    def hook(*args: Any, **kwargs: Any) -> None:
        raise exc

    return hook


def _count(engine: Engine, model: Any, *where: Any) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _logged(caplog: pytest.LogCaptureFixture, path: str) -> bool:
    return any(
        r.name == ROUTING_LOG and "after-commit hook" in r.getMessage() and path in r.getMessage()
        for r in caplog.records
    )


def _idle_freezer(app: FastAPI) -> Any:
    """The app's freezer once its startup pass is over: nothing freezes behind the test."""
    deadline = time.monotonic() + 30
    while not app.state.freezer.idle():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return app.state.freezer


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_job_answers_202_when_its_publish_hook_raises(
    failure: str,
    client: TestClient,
    app: FastAPI,
    api: Any,
    admin_headers: dict[str, str],
    engine: Engine,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.push_default(admin_headers)
    batch = api.create_batch(admin_headers, [{"prompt": f"p {i}"} for i in range(10)])
    monkeypatch.setattr(app.state.outbox, "publish", _raises(FAILURES[failure]))
    body = {
        "type": "sl_cai",
        "batch_id": batch["id"],
        "constitution": "default",
        "model": "smollm2-135m",
        "chunk_size": 3,
    }
    headers = admin_headers | {"Idempotency-Key": f"job-{failure}"}
    with caplog.at_level(logging.ERROR, logger=ROUTING_LOG):
        first = client.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert _logged(caplog, "/v1/jobs")
    job_id = first.json()["id"]
    assert _count(engine, Job) == 1
    assert _count(engine, WorkItem, WorkItem.job_id == job_id) == 10
    unpublished = WorkItem.published_at.is_(None)
    assert _count(engine, WorkItem, WorkItem.job_id == job_id, unpublished) == 10

    retry = client.post("/v1/jobs", json=body, headers=headers)
    assert retry.status_code == 202 and retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json() == first.json()
    assert _count(engine, Job) == 1 and _count(engine, IdempotencyRecord) == 1

    # The repair: the sweeper's pass publishes every chunk the hook did not.
    report = sweep(app.state.sessions, app.state.producer, settings)
    assert report.published == first.json()["chunk_count"] == 4
    assert _count(engine, WorkItem, WorkItem.job_id == job_id, unpublished) == 0


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_dataset_answers_202_when_its_freezer_wake_raises(
    failure: str,
    client: TestClient,
    app: FastAPI,
    admin_headers: dict[str, str],
    corpus: Corpus,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    freezer = _idle_freezer(app)
    monkeypatch.setattr(freezer, "wake", _raises(FAILURES[failure]))
    headers = admin_headers | {"Idempotency-Key": f"freeze-{failure}"}
    spec = {"name": "hooked", "kind": "sft"}
    with caplog.at_level(logging.ERROR, logger=ROUTING_LOG):
        first = client.post("/v1/datasets", json=spec, headers=headers)
    assert first.status_code == 202, first.text
    assert _logged(caplog, "/v1/datasets")
    accepted = first.json()
    assert accepted["state"] == "freezing" and accepted["ref"] == "hooked@1"
    with session_factory(engine)() as session:
        version = session.scalars(select(DatasetVersion)).one()
        assert version.lease_owner is None  # nobody froze it: the wake never happened

    retry = client.post("/v1/datasets", json=spec, headers=headers)
    assert retry.status_code == 202 and retry.headers.get("Idempotent-Replayed") == "true"
    assert retry.json() == accepted
    assert _count(engine, DatasetVersion) == 1

    # The repair: the client polls the version, which wakes a freezer (nobody holds it).
    monkeypatch.undo()
    ready = wait_ready(client, admin_headers, accepted["ref"])
    assert ready["row_count"] == accepted["rows_total"]
    versions = client.get("/v1/datasets/hooked/versions", headers=admin_headers).json()
    assert [(v["version"], v["state"]) for v in versions] == [(1, "ready")]


def test_a_read_answers_when_the_freezer_it_wakes_cannot_start(
    client: TestClient,
    app: FastAPI,
    admin_headers: dict[str, str],
    corpus: Corpus,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A read of a version nobody freezes wakes a freezer inside the request (so the
    409 of an export wakes it too): a wake that fails is logged, never answered."""
    monkeypatch.setattr(_idle_freezer(app)._thread, "wake", _raises(FAILURES["bug"]))
    accepted = client.post(
        "/v1/datasets", json={"name": "stuck", "kind": "sft"}, headers=admin_headers
    )
    assert accepted.status_code == 202, accepted.text
    read = client.get("/v1/datasets/stuck@1", headers=admin_headers)
    assert read.status_code == 200 and read.json()["state"] == "freezing", read.text
    export = client.get("/v1/datasets/stuck@1/export", headers=admin_headers)
    assert export.status_code == 409 and "freezing" in export.json()["detail"], export.text
    monkeypatch.undo()  # threads can start again: the next read's wake freezes it
    ready = wait_ready(client, admin_headers, "stuck@1")
    assert ready["row_count"] == accepted.json()["rows_total"]


def test_every_hook_runs_after_one_raises(
    client: TestClient,
    app: FastAPI,
    admin_headers: dict[str, str],
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The hooks are independent: a failing one neither answers nor stops the next."""
    ran: list[str] = []
    router = APIRouter(route_class=UnitOfWorkRoute)

    @router.post("/v1/hooked", status_code=status.HTTP_201_CREATED)
    def hooked(request: Request, session: SessionDep, key: SubmitKey) -> dict[str, str]:
        batch = batches.create(session, key.project_id, "hooked", [("p", None, None, None, None)])
        after_commit(request, _raises(FAILURES["database"]))
        after_commit(request, lambda: ran.append("second"))
        return {"id": batch.id}

    app.include_router(router)
    with caplog.at_level(logging.ERROR, logger=ROUTING_LOG):
        response = client.post("/v1/hooked", headers=admin_headers)
    assert response.status_code == 201, response.text
    assert ran == ["second"] and _logged(caplog, "/v1/hooked")
    assert _count(engine, PromptBatch, PromptBatch.id == response.json()["id"]) == 1
