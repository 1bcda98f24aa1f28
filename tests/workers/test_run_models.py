"""Workers that serve ``run:*``: training runs' models loaded on demand from one shared
queue, against a real database (SQLite and PostgreSQL) with scripted engines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

import workers.sweeper
from charter.core.engine import Engine
from charter.core.jobs import RUN_MODELS, run_of_model, serves, serves_any_run
from charter.db.models import Job, Label, TrainingRun, Worker, WorkItem, utcnow
from charter.db.session import session_factory
from charter.key_issuing import ensure_project
from charter.queue import RUN_QUEUE, make_celery, queue_for, worker_queues
from tests.conftest import ROOT
from workers import heartbeat
from workers.engine_cache import RunModelCache
from workers.engine_loader import build_engine, engine_config, load_engines, run_model_dir
from workers.engines.faults import FaultyEngine
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner
from workers.sweeper import unmark_lost

ROWS = [{"prompt": f"Question number {i}?"} for i in range(6)]


@pytest.fixture
def sessions(engine):
    return session_factory(engine)


@pytest.fixture
def runs(sessions):
    """``runs("sft")``: the id of a new completed run of project alpha, with an artifact."""

    def make(type: str = "sft") -> str:
        with sessions() as s, s.begin():
            run = TrainingRun(
                project_id=ensure_project(s, "alpha").id,
                type=type,
                config={},
                status="completed",
                artifact_uri="file:///nowhere/model",
            )
            s.add(run)
            s.flush()
            return run.id

    return make


@pytest.fixture
def worker_row(sessions):
    """The runner's worker, registered as one that serves ``run:*`` (so the gateway
    takes jobs on completed runs)."""
    with sessions() as s, s.begin():
        s.add(Worker(id="w1", hostname="h", pid=1, engine="scripted", models=["m", RUN_MODELS]))


class Loader:
    """Scripted engines, one per load, every load and close logged in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.engines: list[ScriptedEngine] = []

    def __call__(self, name: str) -> Engine:
        self.events.append(("load", name))
        log = self.events

        class Logged(ScriptedEngine):
            def close(self) -> None:
                log.append(("close", self.model_name))
                super().close()

        engine = Logged(model_name=name)
        self.engines.append(engine)
        return engine


def make_runner(sessions, settings, load, slots: int = 1, pinned=None) -> ChunkRunner:
    engines = {"m": ScriptedEngine(model_name="m"), **(pinned or {})}
    cache = RunModelCache(load, slots, pinned=engines)
    return ChunkRunner(sessions, engines, settings, "w1", run_models=cache)


def submit(api, headers, model: str, rows=ROWS, **body) -> dict[str, Any]:
    batch = api.create_batch(headers, rows)
    api.push_default(headers)
    return api.submit(headers, batch_id=batch["id"], model=model, type="sl_cai", **body)


def run_all(runner: ChunkRunner, job: dict[str, Any]) -> None:
    for chunk in range(job["chunk_count"]):
        runner.run_chunk(job["id"], chunk)


def states(sessions, job_id) -> dict[str, int]:
    with sessions() as s:
        return dict(
            s.execute(
                select(WorkItem.status, func.count())
                .where(WorkItem.job_id == job_id)
                .group_by(WorkItem.status)
            ).all()
        )


# --------------------------------------------------------------------------- names and queues


def test_every_run_model_shares_one_queue() -> None:
    run = "a" * 32
    assert queue_for(f"run:{run}") == queue_for(RUN_MODELS) == RUN_QUEUE == "model.runs"
    assert queue_for("smollm2") == "model.smollm2"
    assert run_of_model(f"run:{run}") == run and run_of_model(RUN_MODELS) is None
    names = [q.name for q in worker_queues(["smollm2", RUN_MODELS, f"run:{run}", "smollm2"])]
    assert names == ["model.smollm2", "model.runs"]
    assert serves_any_run([f"run:{run}"]) and serves_any_run([RUN_MODELS])
    assert not serves_any_run(["smollm2"])
    assert serves([RUN_MODELS], f"run:{run}") and not serves([RUN_MODELS], "smollm2")


def test_the_celery_app_consumes_the_runs_queue_once(tmp_path) -> None:
    env = {
        **os.environ,
        "CHARTER_WORKER_MODELS": f"smollm2,run:*,run:{'b' * 32}",
        "CHARTER_DATA_DIR": str(tmp_path),
        "CHARTER_ENV": "test",
    }
    env.pop("CHARTER_BROKER_URL", None)
    code = (
        "import json; from workers.celery_app import app; "
        "print(json.dumps([q.name for q in app.conf.task_queues]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["model.smollm2", "model.runs"]


def test_a_worker_announces_run_models_when_it_serves_them() -> None:
    run = f"run:{'c' * 32}"
    assert heartbeat.announced(["smollm2", RUN_MODELS]) == [RUN_MODELS, "smollm2"]
    # A listed run takes the shared queue, so it loads the other runs' models too.
    assert heartbeat.announced([run]) == [RUN_MODELS, run]
    assert heartbeat.announced(["smollm2"]) == ["smollm2"]


def test_run_star_is_loaded_on_demand_not_at_start(make_settings, sessions) -> None:
    settings = make_settings(worker_engine="scripted", worker_models=["m", RUN_MODELS])
    assert sorted(load_engines(settings, sessions=sessions)) == ["m"]
    faulty = make_settings(worker_engine="scripted", fault_delay_seconds=0.01)
    built = build_engine(faulty, engine_config(faulty), "run:x", lambda run_id: 1 / 0)
    assert isinstance(built, FaultyEngine) and built.model_name == "run:x"


# --------------------------------------------------------------------------- the runner


def test_chunks_of_one_run_model_load_it_once(
    api, admin_headers, sessions, settings, runs, worker_row
) -> None:
    model = f"run:{runs()}"
    job = submit(api, admin_headers, model, chunk_size=3)
    assert job["chunk_count"] == 2
    load = Loader()
    run_all(make_runner(sessions, settings, load), job)
    assert load.events == [("load", model)]
    assert states(sessions, job["id"]) == {"done": len(ROWS)}
    with sessions() as s:
        labels = s.scalars(select(Label).where(Label.job_id == job["id"])).all()
    assert {label.model for label in labels} == {model}
    assert load.engines[0].calls, "the loaded engine did the work"


def test_a_job_on_another_run_evicts_the_loaded_one(
    api, admin_headers, sessions, settings, runs, worker_row
) -> None:
    x, y = f"run:{runs()}", f"run:{runs()}"
    on_x = submit(api, admin_headers, x, rows=ROWS[:2])
    on_y = submit(api, admin_headers, y, rows=ROWS[2:4])
    again = submit(api, admin_headers, x, rows=ROWS[4:])
    load = Loader()
    runner = make_runner(sessions, settings, load)
    for job in (on_x, on_y, again):
        run_all(runner, job)
        assert states(sessions, job["id"]) == {"done": 2}
    assert load.events == [
        ("load", x),
        ("close", x),  # before y loads: one slot
        ("load", y),
        ("close", y),
        ("load", x),
    ]
    assert runner.run_models is not None and runner.run_models.loaded == [x]


def test_a_pinned_run_model_is_used_as_it_is_and_kept(
    api, admin_headers, sessions, settings, runs, worker_row
) -> None:
    pinned_run, other = f"run:{runs()}", f"run:{runs()}"
    pinned = ScriptedEngine(model_name=pinned_run)
    load = Loader()
    runner = make_runner(sessions, settings, load, pinned={pinned_run: pinned})
    for model in (pinned_run, other, pinned_run):
        job = submit(api, admin_headers, model, rows=ROWS[:2])
        run_all(runner, job)
        assert states(sessions, job["id"]) == {"done": 2}
    assert load.events == [("load", other)]
    assert pinned.calls and not pinned.closed


def test_a_run_model_that_cannot_load_fails_its_items_with_the_reason(
    api, admin_headers, sessions, make_settings, runs, worker_row
) -> None:
    """The run's artifact is not in this worker's store: the load raises under the
    lease, each attempt counts, and at ``max_attempts`` the items fail with the error."""
    settings = make_settings(max_attempts=2)
    run_id = runs()
    job = submit(api, admin_headers, f"run:{run_id}", rows=ROWS[:3], chunk_size=3)

    def load(name: str) -> Engine:
        run_model_dir(sessions, settings, run_of_model(name) or "")
        raise AssertionError("the artifact should not be found")

    runner = make_runner(sessions, settings, load)
    released = [runner.run_chunk(job["id"], 0).released for _ in range(4)]
    assert released[0] == 3, released  # the whole chunk given back, its attempt counted
    assert states(sessions, job["id"]) == {"failed": 3}
    with sessions() as s:
        items = s.scalars(select(WorkItem).where(WorkItem.job_id == job["id"])).all()
        assert s.get_one(Job, job["id"]).status == "completed"
    for item in items:
        assert item.attempt == 2 and item.lease_owner is None
        assert item.last_error.startswith("gave up after 2 attempts; last error: ValueError")
        assert f"run:{run_id}" in item.last_error and "not in" in item.last_error


def test_without_a_cache_a_run_model_is_not_served(
    api, admin_headers, sessions, settings, runs, worker_row
) -> None:
    job = submit(api, admin_headers, f"run:{runs()}", rows=ROWS[:2])
    runner = ChunkRunner(sessions, {"m": ScriptedEngine(model_name="m")}, settings, "w1")
    assert runner.run_chunk(job["id"], 0).claimed == 0
    assert states(sessions, job["id"]) == {"queued": 2}


# --------------------------------------------------------------------------- the sweeper


@pytest.mark.parametrize("backlog_age", ["stale", "fresh"])
def test_a_lost_run_message_behind_another_runs_backlog_is_sent_again(
    api, admin_headers, sessions, settings, runs, worker_row, monkeypatch, backlog_age
) -> None:
    """run:A's one message was lost; run:B's three wait in the same queue. Per model,
    B's backlog would cover A's loss (3 waiting >= A's 1 sent). Per queue, 4 sent and
    3 waiting: the oldest chunk, A's, goes out again, and none of B's."""
    a = submit(api, admin_headers, f"run:{runs()}", rows=ROWS[:2], chunk_size=2)
    b = submit(api, admin_headers, f"run:{runs()}", rows=ROWS[:6], chunk_size=2)
    now = utcnow()
    b_sent = now - (timedelta(hours=1) if backlog_age == "stale" else timedelta(seconds=5))
    with sessions() as s, s.begin():
        for job, sent in ((a, now - timedelta(hours=2)), (b, b_sent)):
            s.execute(
                update(WorkItem).where(WorkItem.job_id == job["id"]).values(published_at=sent)
            )
    waiting = {RUN_QUEUE: b["chunk_count"]}
    asked: list[list[str]] = []

    def lengths(app, models):
        asked.append(sorted(models))
        return {queue_for(m): waiting.get(queue_for(m), 0) for m in models}

    monkeypatch.setattr(workers.sweeper, "queue_lengths", lengths)
    app = make_celery(settings)
    assert unmark_lost(sessions, app, after_seconds=600) == 2  # A's chunk, both items
    with sessions() as s:
        unmarked = dict(
            s.execute(
                select(WorkItem.job_id, func.count())
                .where(WorkItem.published_at.is_(None))
                .group_by(WorkItem.job_id)
            ).all()
        )
    assert unmarked == {a["id"]: 2}
    # The outbox sent it again; the queue now holds what it should: nothing more goes.
    waiting[RUN_QUEUE] += 1
    with sessions() as s, s.begin():
        s.execute(update(WorkItem).where(WorkItem.published_at.is_(None)).values(published_at=now))
    assert unmark_lost(sessions, app, after_seconds=600) == 0


def test_a_run_queue_holding_every_message_is_a_backlog(
    api, admin_headers, sessions, settings, runs, worker_row, monkeypatch
) -> None:
    a = submit(api, admin_headers, f"run:{runs()}", rows=ROWS[:2], chunk_size=2)
    b = submit(api, admin_headers, f"run:{runs()}", rows=ROWS[:4], chunk_size=2)
    with sessions() as s, s.begin():
        s.execute(update(WorkItem).values(published_at=utcnow() - timedelta(hours=1)))
    total = a["chunk_count"] + b["chunk_count"]
    monkeypatch.setattr(workers.sweeper, "queue_lengths", lambda app, models: {RUN_QUEUE: total})
    assert unmark_lost(sessions, make_celery(settings), after_seconds=600) == 0
