"""``/metrics``: Charter's series, read from the database at scrape time, equal the
database's own counts after real jobs (scripted engine, SQLite and PostgreSQL); the
per-route HTTP metrics are labelled by route template; worker engine counters pushed
with a heartbeat show up; a broker that is down leaves the database series intact."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import case, func, select, update

from charter.core.engine import ChoiceLogprobs
from charter.core.jobs import ItemState
from charter.db.models import Job, Label, Worker, WorkItem, utcnow
from charter.db.session import session_factory
from services.gateway.metrics import failure_reason
from workers import heartbeat
from workers.engine_stats import EngineStats
from workers.engines.faults import FaultyEngine
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

ROWS = [{"prompt": f"Question number {i}?"} for i in range(6)]
PAIRS = [
    {"prompt": f"Q{i}?", "response_a": "short", "response_b": "a much longer answer"}
    for i in range(4)
]
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(client: TestClient) -> Samples:
    """Every sample of ``/metrics``: name -> {sorted labels: value}."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[key] = sample.value
    return out


def series(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """One series as {label values in the order given: value}."""
    return {
        tuple(dict(key)[label] for label in labels): value
        for key, value in samples.get(name, {}).items()
    }


def submit(api: Any, headers: dict[str, str], rows: list[dict[str, Any]], **body: Any) -> Any:
    batch = api.create_batch(headers, rows)
    api.push_default(headers)
    return api.submit(headers, batch_id=batch["id"], model="m", **body)


@pytest.fixture
def sessions(engine):  # type: ignore[no-untyped-def]
    return session_factory(engine)


@pytest.fixture
def make_runner(sessions, make_settings):  # type: ignore[no-untyped-def]
    def make(engine: Any, worker_id: str = "w1", **overrides: Any) -> ChunkRunner:
        with sessions() as s, s.begin():
            if s.get(Worker, worker_id) is None:
                s.add(Worker(id=worker_id, hostname="h", pid=1, engine="scripted", models=["m"]))
        return ChunkRunner(sessions, {"m": engine}, make_settings(**overrides), worker_id)

    return make


def check_database_series(samples: Samples, sessions: Any) -> None:
    """Items by model and state, labels by model and kind, jobs by type and status, and
    retries by model, as the database counts them now."""
    with sessions() as s:
        items = s.execute(
            select(Job.model, WorkItem.status, func.count())
            .join(Job, Job.id == WorkItem.job_id)
            .group_by(Job.model, WorkItem.status)
        ).all()
        labels = s.execute(
            select(Label.model, Label.kind, func.count()).group_by(Label.model, Label.kind)
        ).all()
        jobs = s.execute(
            select(Job.type, Job.status, func.count()).group_by(Job.type, Job.status)
        ).all()
        retries = s.execute(
            select(Job.model, func.sum(case((WorkItem.attempt > 1, WorkItem.attempt - 1), else_=0)))
            .join(Job, Job.id == WorkItem.job_id)
            .group_by(Job.model)
        ).all()
    assert series(samples, "charter_work_items", "model", "state") == {
        (m, st): float(n) for m, st, n in items
    }
    assert series(samples, "charter_labels_total", "model", "kind") == {
        (m, k): float(n) for m, k, n in labels
    }
    assert series(samples, "charter_jobs", "type", "status") == {
        (t, st): float(n) for t, st, n in jobs
    }
    assert series(samples, "charter_item_retries_total", "model") == {
        (m,): float(n) for m, n in retries
    }


def low_mass(conversation: Any, prefix: str, choices: tuple[str, str]) -> ChoiceLogprobs:
    return ChoiceLogprobs(a=-5.0, b=-5.0)  # mass ~0.013: abstained


def test_series_equal_the_database_after_real_jobs(
    api: Any,
    admin_headers: dict[str, str],
    sessions: Any,
    make_runner: Any,
    settings: Any,
) -> None:
    # A job that labels, one with a poison item that fails after retries, one whose
    # judge abstains, and one left waiting (some of it unpublished, some leases lost).
    done = submit(api, admin_headers, ROWS, type="sl_cai", chunk_size=4)
    poison_rows = [*ROWS[:3], {"prompt": "POISON please"}]
    poisoned = submit(api, admin_headers, poison_rows, type="sl_cai", chunk_size=4)
    abstain = submit(api, admin_headers, PAIRS, type="compare", chunk_size=2)
    waiting_rows = [{**r, "response": "an answer"} for r in ROWS]
    waiting = submit(api, admin_headers, waiting_rows, type="critique", chunk_size=2)

    runner = make_runner(ScriptedEngine(model_name="m"))
    for chunk in range(done["chunk_count"]):
        runner.run_chunk(done["id"], chunk)
    faulty = make_runner(FaultyEngine(ScriptedEngine(model_name="m"), poison="POISON"))
    for _ in range(4):  # the whole chunk fails once, then item by item up to max_attempts
        faulty.run_chunk(poisoned["id"], 0)
    judge = make_runner(ScriptedEngine(model_name="m", choice_fn=low_mass))
    for chunk in range(abstain["chunk_count"]):
        judge.run_chunk(abstain["id"], chunk)
    with sessions() as s, s.begin():
        s.execute(  # chunks 0-1 never reached the broker (the outbox's backlog)
            update(WorkItem)
            .where(WorkItem.job_id == waiting["id"], WorkItem.chunk < 2)
            .values(published_at=None)
        )
        s.execute(  # chunk 2 held by a worker that died: its lease expired
            update(WorkItem)
            .where(WorkItem.job_id == waiting["id"], WorkItem.chunk == 2)
            .values(
                status=ItemState.RUNNING,
                attempt=1,
                lease_owner="dead",
                lease_expires_at=utcnow() - timedelta(minutes=5),
            )
        )
    api.client.get(f"/v1/jobs/{done['id']}", headers=admin_headers)  # a templated route

    samples = scrape(api.client)
    check_database_series(samples, sessions)

    with sessions() as s:
        unpublished = s.execute(
            select(WorkItem.job_id, WorkItem.chunk)
            .where(WorkItem.status == ItemState.QUEUED, WorkItem.published_at.is_(None))
            .distinct()
        ).all()
        retries = s.scalar(select(func.sum(case((WorkItem.attempt > 1, WorkItem.attempt - 1)))))
        expired = s.scalar(
            select(func.count()).where(
                WorkItem.status == ItemState.RUNNING, WorkItem.lease_expires_at < utcnow()
            )
        )
        final = s.execute(
            select(WorkItem.status, WorkItem.last_error).where(
                WorkItem.status.in_([ItemState.FAILED, ItemState.ABSTAINED])
            )
        ).all()

    got_items = series(samples, "charter_work_items", "model", "state")
    assert got_items[("m", "done")] == 6 + 3  # the first job and the poison job's others
    assert series(samples, "charter_outbox_backlog_chunks") == {(): float(len(unpublished))}
    assert len(unpublished) == 2
    assert series(samples, "charter_item_retries_total", "model") == {("m",): float(retries)}
    assert retries and retries >= 2  # the poison item ran three times
    assert series(samples, "charter_leases_expired", "model") == {("m",): float(expired)}
    assert expired == 2
    # Failures by short reason: the poison item's error class, the judge's abstentions.
    reasons = Counter(
        "low_mass" if st == ItemState.ABSTAINED and err.startswith("A/B probability mass") else err
        for st, err in final
    )
    assert reasons["low_mass"] == len(PAIRS)
    failed = [err for st, err in final if st == ItemState.FAILED]
    assert len(failed) == 1 and "PoisonError" in failed[0]
    assert series(samples, "charter_item_failures", "model", "reason") == {
        ("m", "low_mass"): float(len(PAIRS)),
        ("m", "PoisonError"): 1.0,
    }
    # Every job's chunks went to the (filesystem) broker at submission; the runner was
    # called directly, so every message still waits there.
    folder = Path(settings.broker_dir) / "queue"
    messages = [p for p in folder.iterdir() if "model.m" in p.name]
    chunks = sum(j["chunk_count"] for j in (done, poisoned, abstain, waiting))
    assert len(messages) == chunks
    assert series(samples, "charter_queue_depth", "queue")[("model.m",)] == float(len(messages))
    assert series(samples, "charter_broker_up") == {(): 1.0}
    assert 0 < samples["charter_scrape_duration_seconds"][()] < 1.0
    # Per-route metrics: by template, never by raw path.
    handlers = set(series(samples, "charter_http_requests_total", "handler", "method", "status"))
    assert ("/v1/jobs/{job_id}", "GET", "200") in handlers
    assert ("/v1/jobs", "POST", "202") in handlers
    assert not [h for h, _, _ in handlers if done["id"] in h]
    latency = series(samples, "charter_http_request_duration_seconds_count", "handler", "method")
    assert latency[("/v1/jobs/{job_id}", "GET")] == 1.0

    # Later scrapes keep the finished jobs' counts and read the open jobs' rows afresh.
    for chunk in range(waiting["chunk_count"]):
        runner.run_chunk(waiting["id"], chunk)
    later = scrape(api.client)
    check_database_series(later, sessions)
    assert later != samples


def test_a_chunk_run_pushes_engine_counters_with_the_next_beat(
    api: Any, admin_headers: dict[str, str], sessions: Any, make_runner: Any
) -> None:
    engine = ScriptedEngine(model_name="m")
    runner = make_runner(engine, worker_id="host:42")
    job = submit(api, admin_headers, ROWS, type="sl_cai", params={"rounds": 1}, chunk_size=6)
    before = scrape(api.client)
    assert series(before, "charter_engine_calls_total", "worker") == {("host:42",): 0.0}

    runner.run_chunk(job["id"], 0)
    assert runner.stats.current_chunk is None  # not running any more
    heartbeat.beat(sessions, "host:42", runner.stats)
    samples = scrape(api.client)

    calls = len(engine.calls)
    assert calls == 3  # response, critique, revision: one batch of 6 each
    worker = {"worker": "host:42", "engine": "scripted"}
    key = tuple(sorted(worker.items()))
    assert samples["charter_engine_calls_total"][key] == calls
    assert samples["charter_engine_batch_items_total"][key] == sum(n for _, n in engine.calls)
    assert samples["charter_engine_seconds_total"][key] > 0
    tokens = series(samples, "charter_engine_tokens_total", "worker", "direction")
    assert tokens[("host:42", "in")] > 0 and tokens[("host:42", "out")] > 0
    with sessions() as s:
        row = s.get_one(Worker, "host:42")
        assert (row.engine_calls, row.tokens_out) == (calls, tokens[("host:42", "out")])
    assert series(samples, "charter_workers_online", "engine") == {("scripted",): 1.0}

    # A restart of the same worker counts from zero again.
    heartbeat.register(sessions, "host:42", "scripted", ["m"])
    assert series(scrape(api.client), "charter_engine_calls_total", "worker") == {("host:42",): 0.0}


def test_a_worker_that_stopped_beating_leaves_the_series(
    api: Any, sessions: Any, make_runner: Any
) -> None:
    make_runner(ScriptedEngine(model_name="m"), worker_id="gone:1")
    with sessions() as s, s.begin():
        s.execute(update(Worker).values(last_seen=utcnow() - timedelta(hours=1)))
    samples = scrape(api.client)
    assert series(samples, "charter_engine_calls_total", "worker") == {}
    assert series(samples, "charter_workers_online", "engine") == {}


def test_a_dead_broker_still_gives_the_database_series(
    make_client: Any, admin_headers: dict[str, str], default_document: dict[str, Any]
) -> None:
    client = make_client(broker_url="redis://127.0.0.1:1/0")
    samples = scrape(client)
    assert series(samples, "charter_broker_up") == {(): 0.0}
    assert "charter_queue_depth" not in samples
    assert series(samples, "charter_outbox_backlog_chunks") == {(): 0.0}
    assert "charter_scrape_duration_seconds" in samples


def test_engine_stats_add_up() -> None:
    stats = EngineStats()
    stats.add(0.5, 4, 10, 20)
    stats.add(0.25, 2, 1, 0)
    assert stats.snapshot() == {
        "current_chunk": None,
        "engine_calls": 2,
        "engine_seconds": 0.75,
        "batch_items": 6,
        "tokens_in": 11,
        "tokens_out": 20,
    }


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("gave up after 3 attempts; last error: PoisonError: poisoned batch", "PoisonError"),
        (
            "gave up after 3 attempts; last error: lease of h:1 expired (worker lost)",
            "lease_expired",
        ),
        ("gave up after 1 attempts; last error: worker lost", "worker_lost"),
        (
            "gave up after 2 attempts; last error: torch.cuda.OutOfMemoryError: CUDA",
            "OutOfMemoryError",
        ),
        ("something else entirely", "other"),
        (None, "worker_lost"),
    ],
)
def test_failure_reasons_are_short(text: str | None, reason: str) -> None:
    assert failure_reason(text) == reason
