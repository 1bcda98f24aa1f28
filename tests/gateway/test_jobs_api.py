"""``/v1/jobs`` and ``/v1/workers``: submit, validate, cancel, list, items, the outbox."""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import OperationalError

import charter.outbox
import services.gateway.outbox
from charter.core.jobs import ITEM_STATES
from charter.db.models import Job, Label, Prompt, TrainingRun, Worker, WorkItem, utcnow
from charter.db.session import session_factory
from charter.key_issuing import ensure_project
from charter.outbox import publish_pending
from charter.queue import queue_for
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

PROMPTS = [{"prompt": f"prompt {i}"} for i in range(10)]
WITH_RESPONSE = [{"prompt": f"prompt {i}", "response": f"response {i}"} for i in range(10)]
WITH_PAIR = [
    {"prompt": f"prompt {i}", "response_a": f"a {i}", "response_b": f"b {i}"} for i in range(10)
]


def _error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert {"error", "detail"} <= set(body)
    if field is not None:
        assert body.get("field") == field, body
    return body


def _items(engine: Engine, job_id: str) -> list[WorkItem]:
    with session_factory(engine)() as session:
        return list(
            session.scalars(select(WorkItem).where(WorkItem.job_id == job_id).order_by(WorkItem.id))
        )


def _broker_messages(settings: Any) -> list[Path]:
    folder = settings.broker_dir / "queue"
    return sorted(folder.glob("*.msg")) if folder.exists() else []


class Batches:
    """Batch ids by kind, each created on first use."""

    ROWS: ClassVar[dict[str, list[dict[str, Any]]]] = {
        "prompts": PROMPTS,
        "responses": WITH_RESPONSE,
        "pairs": WITH_PAIR,
    }

    def __init__(self, api: Any, headers: dict[str, str]) -> None:
        self._api, self._headers, self._ids = api, headers, {}

    def __getitem__(self, kind: str) -> str:
        if kind not in self._ids:
            self._ids[kind] = self._api.create_batch(self._headers, self.ROWS[kind], kind)["id"]
        return self._ids[kind]


@pytest.fixture
def ready(api: Any, admin_headers: dict[str, str]) -> Batches:
    """The default constitution pushed; batches (prompts, responses, pairs) on demand."""
    api.push_default(admin_headers)
    return Batches(api, admin_headers)


def _spec(batch: str, /, **change: Any) -> dict[str, Any]:
    return {"type": "sl_cai", "batch_id": batch, "constitution": "default", "model": "m"} | change


@pytest.mark.parametrize(
    ("job_type", "batch", "chunk_size", "chunks"),
    [
        ("sl_cai", "prompts", 3, 4),
        ("rl_cai", "prompts", 5, 2),
        ("critique", "responses", 1, 10),
        ("revise", "responses", 16, 1),
        ("compare", "pairs", 4, 3),
        ("generate", "prompts", 5, 2),
    ],
)
def test_submit_each_type(
    client: TestClient,
    admin_headers: dict[str, str],
    engine: Engine,
    ready: Batches,
    job_type: str,
    batch: str,
    chunk_size: int,
    chunks: int,
) -> None:
    response = client.post(
        "/v1/jobs",
        json={
            "type": job_type,
            "batch_id": ready[batch],
            "constitution": "default",
            "model": "smollm2-135m",
            "chunk_size": chunk_size,
            "seed": 1234,
            "params": {"rounds": 2, "sampling": {"temperature": 0.2}},
        },
        headers=admin_headers,
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["type"] == job_type
    assert job["status"] == "queued"
    assert job["batch_id"] == ready[batch]
    assert job["constitution"] == "default@1"  # pinned at submission
    assert job["seed"] == 1234
    assert job["item_count"] == 10
    assert job["chunk_count"] == chunks
    assert job["counts"] == {state: (10 if state == "queued" else 0) for state in ITEM_STATES}
    assert job["params"]["rounds"] == 2
    assert job["params"]["chunk_size"] == chunk_size
    assert job["params"]["sampling"]["temperature"] == 0.2
    assert job["finished_at"] is None

    items = _items(engine, job["id"])
    assert len(items) == 10
    assert {i.status for i in items} == {"queued"}
    assert {i.attempt for i in items} == {0}
    with session_factory(engine)() as session:
        positions = dict(
            session.execute(
                select(Prompt.id, Prompt.position).where(Prompt.batch_id == ready[batch])
            ).all()
        )
    assert {i.prompt_id for i in items} == set(positions)
    for item in items:  # chunk k holds positions [k * size, (k + 1) * size)
        assert item.chunk == positions[item.prompt_id] // chunk_size
        assert type(item.chunk) is int
    assert sorted(Counter(i.chunk for i in items)) == list(range(chunks))

    got = client.get(f"/v1/jobs/{job['id']}", headers=admin_headers)
    assert got.status_code == 200
    assert got.json() == job


def test_default_chunk_size_and_random_seed(
    api: Any, make_client: Any, admin_headers: dict[str, str], ready: Batches
) -> None:
    client = make_client(chunk_size=4)
    first, second = (
        client.post("/v1/jobs", json=_spec(ready["prompts"]), headers=admin_headers).json()
        for _ in range(2)
    )
    assert first["chunk_count"] == 3 and first["params"]["chunk_size"] == 4
    assert first["seed"] != second["seed"]
    assert 0 <= first["seed"] < 2**62


def test_constitution_is_pinned_at_submission(
    api: Any,
    client: TestClient,
    admin_headers: dict[str, str],
    ready: Batches,
    default_document: dict[str, Any],
) -> None:
    before = api.submit(admin_headers, batch_id=ready["prompts"])
    changed = copy.deepcopy(default_document)
    changed["description"] = "A second version."
    api.push(admin_headers, changed)
    after = api.submit(admin_headers, batch_id=ready["prompts"])
    pinned = api.submit(admin_headers, batch_id=ready["prompts"], constitution="default@1")
    assert (before["constitution"], after["constitution"], pinned["constitution"]) == (
        "default@1",
        "default@2",
        "default@1",
    )
    again = client.get(f"/v1/jobs/{before['id']}", headers=admin_headers).json()
    assert again["constitution"] == "default@1"


def test_batch_missing_what_the_type_needs_is_422(
    client: TestClient, admin_headers: dict[str, str], ready: Batches
) -> None:
    cases = [
        ("critique", "prompts"),
        ("revise", "prompts"),
        ("compare", "prompts"),
        ("compare", "responses"),
    ]
    for job_type, batch in cases:
        response = client.post(
            "/v1/jobs", json=_spec(ready[batch], type=job_type), headers=admin_headers
        )
        body = _error(response, 422, "batch_id")
        assert "row 0" in body["detail"], (job_type, batch, body)
    assert client.get("/v1/jobs", headers=admin_headers).json()["items"] == []


def test_partly_supplied_responses_name_the_first_row_without(
    api: Any, client: TestClient, admin_headers: dict[str, str], ready: Batches
) -> None:
    rows = [*WITH_RESPONSE[:3], {"prompt": "no response"}, *WITH_RESPONSE[3:]]
    batch = api.create_batch(admin_headers, rows)
    response = client.post(
        "/v1/jobs",
        json={"type": "critique", "batch_id": batch["id"], "constitution": "default", "model": "m"},
        headers=admin_headers,
    )
    assert "row 3" in _error(response, 422, "batch_id")["detail"]


def test_constitution_lacking_the_needed_principles_is_422(
    api: Any,
    client: TestClient,
    admin_headers: dict[str, str],
    ready: Batches,
    default_document: dict[str, Any],
) -> None:
    only_critique = copy.deepcopy(default_document)
    only_critique.update(name="only-critique", comparison_principles=[], comparison_examples=[])
    only_comparison = copy.deepcopy(default_document)
    only_comparison.update(name="only-comparison", critique_principles=[], critique_examples=[])
    api.push(admin_headers, only_critique)
    api.push(admin_headers, only_comparison)
    for job_type, constitution in (("rl_cai", "only-critique"), ("sl_cai", "only-comparison")):
        response = client.post(
            "/v1/jobs",
            json={
                "type": job_type,
                "batch_id": ready["prompts"],
                "constitution": constitution,
                "model": "m",
            },
            headers=admin_headers,
        )
        _error(response, 422, "constitution")
    ok = client.post(
        "/v1/jobs",
        json={
            "type": "rl_cai",
            "batch_id": ready["prompts"],
            "constitution": "only-comparison",
            "model": "m",
        },
        headers=admin_headers,
    )
    assert ok.status_code == 202, ok.text


def test_generate_takes_a_system_prompt_and_draws_no_principle(
    api: Any,
    client: TestClient,
    admin_headers: dict[str, str],
    ready: Batches,
    default_document: dict[str, Any],
    engine: Engine,
    settings: Any,
) -> None:
    only_critique = copy.deepcopy(default_document)
    only_critique.update(name="only-critique", comparison_principles=[], comparison_examples=[])
    api.push(admin_headers, only_critique)  # no comparison principle: no rl_cai, but generate
    spec = _spec(ready["prompts"], type="generate", constitution="only-critique")
    plain = client.post("/v1/jobs", json=spec, headers=admin_headers)
    assert plain.status_code == 202, plain.text
    told = client.post(
        "/v1/jobs",
        json=spec | {"constitution": "default", "params": {"system_prompt": "constitution"}},
        headers=admin_headers,
    )
    assert told.status_code == 202, told.text
    assert told.json()["params"]["system_prompt"] == "constitution"
    assert "critique_template" in told.json()["params"]  # a default, not pinned to a version
    for job_type in ("sl_cai", "rl_cai"):
        refused = client.post(
            "/v1/jobs",
            json=_spec(ready["prompts"], type=job_type, params={"system_prompt": "constitution"}),
            headers=admin_headers,
        )
        assert "only generate jobs" in _error(refused, 422, "params.system_prompt")["detail"]
    bad = client.post(
        "/v1/jobs", json=spec | {"params": {"system_prompt": "yours"}}, headers=admin_headers
    )
    _error(bad, 422, "body.params.system_prompt")

    job = told.json()
    _label_all(engine, settings, job, "w-generate")
    with session_factory(engine)() as session:
        labels = session.scalars(select(Label).where(Label.job_id == job["id"])).all()
    assert len(labels) == 10 and {label.kind for label in labels} == {"generate"}
    assert all(label.completion and label.response is None for label in labels)
    assert all(label.principle_ids == [] and label.sampling_hash for label in labels)
    assert {label.job_params["system_prompt"] for label in labels} == {"constitution"}
    results = client.get(f"/v1/jobs/{job['id']}/results", headers=admin_headers).json()
    assert sorted(r["completion"] for r in results["items"]) == sorted(
        label.completion for label in labels
    )
    stats = client.get(f"/v1/stats/jobs/{job['id']}", headers=admin_headers)
    assert stats.status_code == 200, stats.text
    assert stats.json()["principle_draws"] == {}  # a generation draws no principle


def test_unknown_or_bad_constitution(
    client: TestClient, admin_headers: dict[str, str], ready: Batches
) -> None:
    cases = [("nope", 404), ("default@7", 404), ("Bad@x", 422), ("default@0", 422)]
    for constitution, status in cases:
        response = client.post(
            "/v1/jobs",
            json=_spec(ready["prompts"], constitution=constitution),
            headers=admin_headers,
        )
        assert response.status_code == status, (constitution, response.text)
        assert response.json()["field"] == "constitution"


def test_unknown_batch_is_404(
    client: TestClient, admin_headers: dict[str, str], ready: Batches
) -> None:
    response = client.post(
        "/v1/jobs",
        json={"type": "sl_cai", "batch_id": "f" * 32, "constitution": "default", "model": "m"},
        headers=admin_headers,
    )
    _error(response, 404, "batch_id")


INVALID_SPECS: list[tuple[dict[str, Any], str]] = [
    ({"params": {"rounds": 5}}, "body.params.rounds"),
    ({"params": {"rounds": 0}}, "body.params.rounds"),
    ({"params": {"cot_band": [0.6, 0.4]}}, "body.params"),
    ({"params": {"min_choice_mass": 1.5}}, "body.params.min_choice_mass"),
    ({"params": {"sampling": {"top_k": 5}}}, "body.params.sampling.top_k"),
    ({"params": {"sampling": {"temperature": 3}}}, "body.params.sampling.temperature"),
    ({"params": {"unknown": True}}, "body.params.unknown"),
    ({"params": {"feedback_template": "Not A Ref"}}, "body.params.feedback_template"),
    ({"params": {"feedback_template": 3}}, "body.params.feedback_template"),
    ({"params": "fast"}, "body.params"),
    ({"type": "summarise"}, "body.type"),
    ({"model": "bad model!"}, "body.model"),
    ({"model": ""}, "body.model"),
    ({"seed": -1}, "body.seed"),
    ({"seed": 2**62 + 1}, "body.seed"),
    ({"seed": "abc"}, "body.seed"),
    ({"chunk_size": 0}, "body.chunk_size"),
    ({"chunk_size": 1025}, "body.chunk_size"),
    ({"priority": "high"}, "body.priority"),
    ({"batch_id": None}, "body.batch_id"),
    ({"constitution": "x" * 81}, "body.constitution"),
]


def test_invalid_job_spec_is_422(
    client: TestClient, admin_headers: dict[str, str], engine: Engine, ready: Batches
) -> None:
    for change, field in INVALID_SPECS:
        response = client.post(
            "/v1/jobs", json=_spec(ready["prompts"], **change), headers=admin_headers
        )
        assert response.status_code == 422, (change, response.text)
        assert response.json()["field"] == field, (change, response.json())
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_cancel_cancels_the_job_and_its_items(
    api: Any,
    client: TestClient,
    admin_headers: dict[str, str],
    engine: Engine,
    ready: Batches,
) -> None:
    job = api.submit(admin_headers, batch_id=ready["prompts"], chunk_size=4)
    first_item = _items(engine, job["id"])[0]
    with session_factory(engine)() as session, session.begin():  # one item is being worked on
        session.execute(
            update(WorkItem)
            .where(WorkItem.id == first_item.id)
            .values(status="running", attempt=1, lease_owner="w1", lease_expires_at=utcnow())
        )
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=admin_headers)
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    assert cancelled["counts"]["cancelled"] == 10
    assert cancelled["counts"]["queued"] == cancelled["counts"]["running"] == 0

    items = _items(engine, job["id"])
    assert {i.status for i in items} == {"cancelled"}
    assert {i.lease_owner for i in items} == {None}

    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=admin_headers)
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"
    assert again.json()["finished_at"] == cancelled["finished_at"]
    assert (
        client.get(f"/v1/jobs/{job['id']}", headers=admin_headers).json()["status"] == "cancelled"
    )


def test_cancel_leaves_finished_items_alone_and_refuses_completed_jobs(
    api: Any,
    client: TestClient,
    admin_headers: dict[str, str],
    engine: Engine,
    ready: Batches,
) -> None:
    partial = api.submit(admin_headers, batch_id=ready["prompts"])
    done = api.submit(admin_headers, batch_id=ready["prompts"])
    with session_factory(engine)() as session, session.begin():
        first_three = [i.id for i in _items(engine, partial["id"])[:3]]
        session.execute(update(WorkItem).where(WorkItem.id.in_(first_three)).values(status="done"))
        session.execute(update(WorkItem).where(WorkItem.job_id == done["id"]).values(status="done"))

    assert (
        client.get(f"/v1/jobs/{partial['id']}", headers=admin_headers).json()["status"] == "running"
    )
    body = client.post(f"/v1/jobs/{partial['id']}/cancel", headers=admin_headers).json()
    assert body["counts"]["done"] == 3 and body["counts"]["cancelled"] == 7

    assert (
        client.get(f"/v1/jobs/{done['id']}", headers=admin_headers).json()["status"] == "completed"
    )
    _error(client.post(f"/v1/jobs/{done['id']}/cancel", headers=admin_headers), 409, "job_id")


def test_cancel_never_overwrites_a_completion_committed_meanwhile(
    api: Any, client: TestClient, admin_headers: dict[str, str], engine: Engine, ready: Batches
) -> None:
    """A worker's transaction completed the job after the cancel read the items (their
    states are as the cancel saw them): the cancel is refused, the job stays completed,
    and its items are not cancelled."""
    job = api.submit(admin_headers, batch_id=ready["prompts"])
    with session_factory(engine)() as session, session.begin():
        session.execute(update(Job).where(Job.id == job["id"]).values(status="completed"))
    _error(client.post(f"/v1/jobs/{job['id']}/cancel", headers=admin_headers), 409, "job_id")
    with session_factory(engine)() as session:
        assert session.get_one(Job, job["id"]).status == "completed"
    assert {i.status for i in _items(engine, job["id"])} == {"queued"}


def test_unknown_job_is_404(client: TestClient, admin_headers: dict[str, str]) -> None:
    missing = "0" * 32
    for method, url in (
        ("GET", f"/v1/jobs/{missing}"),
        ("POST", f"/v1/jobs/{missing}/cancel"),
        ("GET", f"/v1/jobs/{missing}/results"),
        ("GET", f"/v1/jobs/{missing}/items"),
    ):
        _error(client.request(method, url, headers=admin_headers), 404, "job_id")


def test_list_jobs_pages_through_everything(
    api: Any, client: TestClient, admin_headers: dict[str, str], ready: Batches
) -> None:
    created = [api.submit(admin_headers, batch_id=ready["prompts"])["id"] for _ in range(7)]
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        body = client.get("/v1/jobs", params=params, headers=admin_headers).json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [j["id"] for page in pages for j in page]
    assert len(seen) == len(set(seen)) == 7
    assert set(seen) == set(created)
    keys = [(datetime.fromisoformat(j["created_at"]), j["id"]) for page in pages for j in page]
    assert keys == sorted(keys, reverse=True)  # newest first
    assert keys[0][1] == created[-1] and keys[-1][1] == created[0]
    assert all(j["counts"]["queued"] == 10 for page in pages for j in page)

    default_page = client.get("/v1/jobs", headers=admin_headers).json()
    assert len(default_page["items"]) == 7 and default_page["next_cursor"] is None


def test_list_jobs_bad_page_parameters_are_422(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    for query in ("limit=0", "limit=1001", "cursor=%25%25", "cursor=WzFd", "cursor=WyJ4IiwgInkiXQ"):
        response = client.get(f"/v1/jobs?{query}", headers=admin_headers)
        assert response.status_code == 422, (query, response.text)


def test_results_are_empty_until_workers_label(
    api: Any, client: TestClient, admin_headers: dict[str, str], ready: Batches
) -> None:
    job = api.submit(admin_headers, batch_id=ready["pairs"], type="compare")
    response = client.get(f"/v1/jobs/{job['id']}/results", headers=admin_headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_cursor": None}
    _error(client.get(f"/v1/jobs/{job['id']}/results?limit=0", headers=admin_headers), 422)


def test_items_filter_by_state_and_paginate(
    api: Any,
    client: TestClient,
    admin_headers: dict[str, str],
    engine: Engine,
    ready: Batches,
) -> None:
    job = api.submit(admin_headers, batch_id=ready["prompts"], chunk_size=4)
    ids = [i.id for i in _items(engine, job["id"])]
    with session_factory(engine)() as session, session.begin():
        session.execute(update(WorkItem).where(WorkItem.id.in_(ids[:2])).values(status="done"))
        session.execute(
            update(WorkItem).where(WorkItem.id == ids[2]).values(status="failed", last_error="boom")
        )
    url = f"/v1/jobs/{job['id']}/items"

    everything = client.get(url, headers=admin_headers).json()
    assert [i["id"] for i in everything["items"]] == ids
    assert everything["next_cursor"] is None
    assert set(everything["items"][0]) == {
        "id",
        "prompt_id",
        "chunk",
        "status",
        "attempt",
        "last_error",
    }

    def states(state: str) -> list[dict[str, Any]]:
        response = client.get(url, params={"state": state}, headers=admin_headers)
        assert response.status_code == 200, response.text
        return response.json()["items"]

    assert [i["id"] for i in states("done")] == ids[:2]
    failed = states("failed")
    assert [(i["id"], i["last_error"]) for i in failed] == [(ids[2], "boom")]
    assert [i["id"] for i in states("queued")] == ids[3:]
    assert states("running") == []

    walked: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"state": "queued", "limit": 3} | (
            {"cursor": cursor} if cursor else {}
        )
        body = client.get(url, params=params, headers=admin_headers).json()
        walked += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert walked == ids[3:]

    body = client.get(job_url := f"/v1/jobs/{job['id']}", headers=admin_headers).json()
    assert body["status"] == "running"
    assert (body["counts"]["done"], body["counts"]["failed"], body["counts"]["queued"]) == (2, 1, 7)
    assert job_url

    _error(client.get(url, params={"state": "exploded"}, headers=admin_headers), 422, "query.state")
    _error(client.get(url, params={"cursor": "!!"}, headers=admin_headers), 422, "cursor")


def test_submit_publishes_through_the_outbox(
    api: Any,
    admin_headers: dict[str, str],
    engine: Engine,
    settings: Any,
    ready: Batches,
) -> None:
    assert _broker_messages(settings) == []
    job = api.submit(admin_headers, batch_id=ready["prompts"], chunk_size=3, model="tiny-model")
    items = _items(engine, job["id"])
    assert all(i.published_at is not None for i in items)
    messages = _broker_messages(settings)
    assert len(messages) == job["chunk_count"] == 4  # one message per chunk
    assert all(m.name.endswith(f".{queue_for('tiny-model')}.msg") for m in messages)


def test_broker_failure_still_accepts_and_leaves_items_for_the_sweeper(
    api: Any,
    app: FastAPI,
    admin_headers: dict[str, str],
    engine: Engine,
    settings: Any,
    ready: Batches,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broker_down(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(charter.outbox, "publish_chunk", broker_down)
    job = api.submit(admin_headers, batch_id=ready["prompts"], chunk_size=3)
    assert job["status"] == "queued"
    items = _items(engine, job["id"])
    assert len(items) == 10
    assert all(i.published_at is None for i in items)
    assert _broker_messages(settings) == []

    monkeypatch.undo()  # the broker is back: the sweeper's pass publishes every chunk
    sent = publish_pending(app.state.sessions, app.state.producer)
    assert sent == job["chunk_count"] == 4
    assert all(i.published_at is not None for i in _items(engine, job["id"]))
    assert len(_broker_messages(settings)) == 4
    assert publish_pending(app.state.sessions, app.state.producer) == 0


def _wait_idle(app: FastAPI, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not app.state.outbox.idle():
        assert time.monotonic() < deadline, "the background drain did not finish"
        time.sleep(0.02)


def test_a_large_job_answers_after_one_batch_and_drains_in_the_background(
    api: Any,
    app: FastAPI,
    admin_headers: dict[str, str],
    engine: Engine,
    settings: Any,
    ready: Batches,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app.state.outbox.batch_chunks = 2  # 10 chunks of 1 item: 5 batches
    release = threading.Event()
    drains: list[str] = []
    real = services.gateway.outbox.publish_pending

    def publish(*args: Any, **kwargs: Any) -> int:
        if kwargs.get("max_batches") is None:  # the background drain waits for the answer
            drains.append(threading.current_thread().name)
            release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(services.gateway.outbox, "publish_pending", publish)
    job = api.submit(admin_headers, batch_id=ready["prompts"], chunk_size=1)
    assert job["chunk_count"] == 10
    published = [i for i in _items(engine, job["id"]) if i.published_at is not None]
    assert len(published) == 2 == len(_broker_messages(settings))  # the first batch only
    release.set()
    _wait_idle(app)
    assert drains == ["outbox"]
    assert all(i.published_at is not None for i in _items(engine, job["id"]))
    assert len(_broker_messages(settings)) == 10  # each chunk once


def test_a_committed_job_answers_202_when_publishing_fails_after_the_commit(
    api: Any,
    app: FastAPI,
    admin_headers: dict[str, str],
    engine: Engine,
    settings: Any,
    ready: Batches,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = services.gateway.outbox.publish_pending
    calls: list[int | None] = []

    def database_blinks(*args: Any, **kwargs: Any) -> int:
        calls.append(kwargs.get("max_batches"))
        if len(calls) == 1:
            raise OperationalError("SELECT", {}, Exception("server closed the connection"))
        return real(*args, **kwargs)

    monkeypatch.setattr(services.gateway.outbox, "publish_pending", database_blinks)
    job = api.submit(admin_headers, batch_id=ready["prompts"], chunk_size=3)  # asserts 202
    assert job["status"] == "queued"
    _wait_idle(app)
    assert calls == [1, None]  # the failed first batch was retried in the background
    assert all(i.published_at is not None for i in _items(engine, job["id"]))
    assert len(_broker_messages(settings)) == job["chunk_count"] == 4


def test_cancelled_items_are_not_published_by_the_sweeper(
    api: Any,
    app: FastAPI,
    client: TestClient,
    admin_headers: dict[str, str],
    engine: Engine,
    ready: Batches,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(charter.outbox, "publish_chunk", lambda *a, **k: 1 / 0)
    job = api.submit(admin_headers, batch_id=ready["prompts"], chunk_size=3)
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=admin_headers)
    monkeypatch.undo()
    assert publish_pending(app.state.sessions, app.state.producer) == 0


def test_workers_listing(
    client: TestClient, admin_headers: dict[str, str], make_headers: Any, engine: Engine
) -> None:
    assert client.get("/v1/workers", headers=admin_headers).json() == []
    with session_factory(engine)() as session, session.begin():
        session.add(Worker(id="host-1:42", hostname="host-1", pid=42, engine="hf", models=["m"]))
    reader = make_headers("alpha", "read")
    workers = client.get("/v1/workers", headers=reader).json()
    assert [(w["id"], w["pid"], w["models"], w["items_done"]) for w in workers] == [
        ("host-1:42", 42, ["m"], 0)
    ]
    assert workers[0]["last_seen"].endswith("Z") or "+00:00" in workers[0]["last_seen"]
    _error(client.get("/v1/workers"), 401)


def _label_all(engine: Engine, settings: Any, job: dict[str, Any], worker_id: str) -> None:
    """Run every chunk of ``job`` as ``worker_id`` with the scripted engine."""
    engines = {"m": ScriptedEngine(model_name="m")}
    runner = ChunkRunner(session_factory(engine), engines, settings, worker_id)
    for chunk in range(job["chunk_count"]):
        runner.run_chunk(job["id"], chunk)


def test_workers_count_only_the_callers_labels(
    api: Any, client: TestClient, make_headers: Any, engine: Engine, settings: Any
) -> None:
    """The fleet is shared; how much work it did for other projects is not."""
    counts = {"alpha": 3, "beta": 5}
    with session_factory(engine)() as session, session.begin():
        session.add(Worker(id="host-1:42", hostname="host-1", pid=42, engine="hf", models=["m"]))
    for project, n in counts.items():
        headers = make_headers(project, "admin")
        api.push_default(headers)
        batch = api.create_batch(headers, [{"prompt": f"p{i}"} for i in range(n)])
        job = api.submit(headers, batch_id=batch["id"], model="m")
        _label_all(engine, settings, job, "host-1:42")
    for project, n in counts.items():
        [worker] = client.get("/v1/workers", headers=make_headers(project, "read")).json()
        assert worker["items_done"] == n


def test_unknown_models_are_refused(
    api: Any, client: TestClient, admin_headers: dict[str, str], ready: Batches, engine: Engine
) -> None:
    spec = {"type": "sl_cai", "batch_id": ready["prompts"], "constitution": "default"}
    for model in ("no-such-model", "../../etc", "smollm2/../x"):
        response = client.post("/v1/jobs", json={**spec, "model": model}, headers=admin_headers)
        body = _error(response, 422)
        assert body["field"] == "model" and "unknown model" in body["detail"], body
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
    # A model a registered worker announces is known, as are the configured ones.
    with session_factory(engine)() as session, session.begin():
        session.add(Worker(id="gpu:1", hostname="gpu", pid=1, engine="vllm", models=["big-7b"]))
    for model in ("big-7b", "smollm2", "m"):
        response = client.post("/v1/jobs", json={**spec, "model": model}, headers=admin_headers)
        assert response.status_code == 202, response.text


def _run(engine: Engine, project: str, type: str, status: str, artifact: bool = True) -> str:
    """A training run of ``project`` as the trainer leaves it (an artifact when asked)."""
    with session_factory(engine)() as session, session.begin():
        run = TrainingRun(
            project_id=ensure_project(session, project).id,
            type=type,
            config={},
            status=status,
            artifact_uri=f"file:///artifacts/runs/{type}/model" if artifact else None,
        )
        session.add(run)
        session.flush()
        return run.id


def test_a_run_model_is_taken_once_a_worker_serves_run_models(
    client: TestClient, admin_headers: dict[str, str], ready: Batches, engine: Engine
) -> None:
    """A completed run finished after the workers started: a worker that announces
    ``run:*`` loads it on demand, so the gateway takes jobs on it from then on."""
    spec = {"type": "generate", "batch_id": ready["prompts"], "constitution": "default"}
    sft, pm = _run(engine, "alpha", "sft", "completed"), _run(engine, "alpha", "pm", "completed")
    queued = _run(engine, "alpha", "sft", "queued", artifact=False)

    def post(run_id: str) -> Any:
        return client.post(
            "/v1/jobs", json={**spec, "model": f"run:{run_id}"}, headers=admin_headers
        )

    body = _error(post(sft), 422, "model")
    assert "unknown model" in body["detail"] and "run:*" in body["detail"], body
    with session_factory(engine)() as session, session.begin():  # serves only what it lists
        session.add(Worker(id="gpu:1", hostname="gpu", pid=1, engine="vllm", models=["big-7b"]))
    _error(post(sft), 422, "model")
    with session_factory(engine)() as session, session.begin():
        session.add(Worker(id="gpu:2", hostname="gpu", pid=2, engine="vllm", models=["run:*"]))
    job = post(sft)
    assert job.status_code == 202, job.text
    assert job.json()["model"] == f"run:{sft}"
    assert "preference model" in _error(post(pm), 422, "model")["detail"]
    assert f"run:{queued} is queued" in _error(post(queued), 422, "model")["detail"]
    # run:* names no model a job can be put on.
    _error(client.post("/v1/jobs", json={**spec, "model": "run:*"}, headers=admin_headers), 422)


def test_the_gateways_own_worker_list_counts_for_run_models(
    make_client: Any, admin_headers: dict[str, str], default_document: Any, engine: Engine
) -> None:
    client = make_client(worker_models=["smollm2", "run:*"])
    pushed = client.post("/v1/constitutions", json=default_document, headers=admin_headers)
    assert pushed.status_code in (200, 201), pushed.text
    batch = client.post(
        "/v1/batches", json={"name": "b", "rows": PROMPTS[:2]}, headers=admin_headers
    ).json()
    sft = _run(engine, "alpha", "sft", "completed")
    spec = {"type": "generate", "batch_id": batch["id"], "constitution": "default"}
    job = client.post("/v1/jobs", json={**spec, "model": f"run:{sft}"}, headers=admin_headers)
    assert job.status_code == 202, job.text


def test_scopes_for_jobs(api: Any, client: TestClient, make_headers: Any, ready: Batches) -> None:
    reader, trainer, submitter = (make_headers("alpha", s) for s in ("read", "train", "submit"))
    spec = {"type": "sl_cai", "batch_id": ready["prompts"], "constitution": "default", "model": "m"}
    _error(client.post("/v1/jobs", json=spec, headers=reader), 403)
    _error(client.post("/v1/jobs", json=spec, headers=trainer), 403)
    job = client.post("/v1/jobs", json=spec, headers=submitter)
    assert job.status_code == 202
    _error(client.post(f"/v1/jobs/{job.json()['id']}/cancel", headers=reader), 403)
    for headers in (reader, trainer, submitter):
        assert client.get(f"/v1/jobs/{job.json()['id']}", headers=headers).status_code == 200
