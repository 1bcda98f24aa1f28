"""The chunk runner against a real database (SQLite and PostgreSQL), scripted engine.

Exactly-once is checked by counting rows: every item ends with one label or a
recorded reason, whatever the deliveries, crashes and lease take-overs.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

import charter.outbox
from charter.core.engine import ChoiceLogprobs, SamplingParams
from charter.core.engine_config import EngineConfig
from charter.db.models import Label, Worker, WorkItem, utcnow
from charter.db.session import session_factory
from charter.outbox import publish_pending
from charter.queue import make_celery
from workers import leases
from workers.engines.faults import FaultyEngine
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner
from workers.sweeper import sweep

ROWS = [{"prompt": f"Question number {i}?"} for i in range(6)]
PAIRS = [
    {"prompt": f"Q{i}?", "response_a": "short", "response_b": "a much longer answer"}
    for i in range(4)
]


@pytest.fixture
def sessions(engine):
    return session_factory(engine)


@pytest.fixture
def make_runner(sessions, make_settings):
    def make(engine=None, worker_id="w1", **overrides: Any) -> ChunkRunner:
        settings = make_settings(**overrides)
        with sessions() as s, s.begin():
            if s.get(Worker, worker_id) is None:
                s.add(
                    Worker(
                        id=worker_id,
                        hostname="h",
                        pid=1,
                        engine="scripted",
                        models=["m"],
                        items_done=0,
                    )
                )
        return ChunkRunner(
            sessions, {"m": engine or ScriptedEngine(model_name="m")}, settings, worker_id
        )

    return make


def submit(api, headers, rows, **body) -> dict[str, Any]:
    batch = api.create_batch(headers, rows)
    api.push_default(headers)
    return api.submit(headers, batch_id=batch["id"], model="m", **body)


def label_rows(sessions, job_id) -> list[Label]:
    with sessions() as s:
        return list(
            s.scalars(select(Label).where(Label.job_id == job_id).order_by(Label.prompt_id))
        )


def states(sessions, job_id) -> dict[str, int]:
    with sessions() as s:
        return dict(
            s.execute(
                select(WorkItem.status, func.count())
                .where(WorkItem.job_id == job_id)
                .group_by(WorkItem.status)
            ).all()
        )


def expire_all_leases(session) -> None:
    session.execute(
        update(WorkItem)
        .where(WorkItem.status == "running")
        .values(lease_expires_at=utcnow() - timedelta(hours=1))
    )


def run_all(runner: ChunkRunner, job: dict[str, Any]) -> None:
    for chunk in range(job["chunk_count"]):
        runner.run_chunk(job["id"], chunk)


def test_sl_cai_labels_every_item_once_with_provenance(api, admin_headers, sessions, make_runner):
    engine = ScriptedEngine(model_name="m")
    job = submit(
        api, admin_headers, ROWS, type="sl_cai", params={"rounds": 3}, chunk_size=4, seed=7
    )
    run_all(make_runner(engine), job)
    labels = label_rows(sessions, job["id"])
    assert len(labels) == len(ROWS)
    assert states(sessions, job["id"]) == {"done": len(ROWS)}
    first = labels[0]
    assert len(first.rounds) == 3 and len(first.principle_ids) == 3
    assert first.completion == first.rounds[-1]["revision"]
    assert first.response and first.response != first.completion
    assert first.constitution_ref == "default@1" and first.model == "m"
    assert first.engine == "scripted" and first.model_revision == "scripted-1"
    assert first.template_hash and first.template_version and first.seed == 7
    assert first.worker_id == "w1" and first.attempt == 1
    assert first.job_params["rounds"] == 3 and first.timings["batch_items"] == 4
    # one batched engine call per step per chunk: response + 3 x (critique, revision)
    assert engine.calls[:7] == [("generate", 4)] * 7
    assert (
        api.client.get(f"/v1/jobs/{job['id']}", headers=admin_headers).json()["status"]
        == "completed"
    )


def test_labels_record_the_engine_config_and_sampling_hashes(
    api, admin_headers, sessions, make_runner
):
    engine = ScriptedEngine(model_name="m", config=EngineConfig(engine="scripted", threads=2))
    runner = make_runner(engine)
    sampling = {"max_tokens": 64, "temperature": 1.0, "top_p": 0.9}
    expected = SamplingParams.model_validate(sampling).compute_hash()
    sampled = {
        "sl_cai": submit(
            api, admin_headers, ROWS[:3], type="sl_cai", params={"sampling": sampling}
        ),
        "rl_cai": submit(
            api, admin_headers, ROWS[:3], type="rl_cai", params={"sampling": sampling}
        ),
        "compare_cot": submit(
            api,
            admin_headers,
            PAIRS,
            type="compare",
            params={"sampling": sampling, "chain_of_thought": True},
        ),
    }
    unsampled = {  # the pair supplied and no reasoning: nothing was generated
        "compare": submit(api, admin_headers, PAIRS, type="compare", params={"sampling": sampling}),
        "rl_cai_pairs": submit(api, admin_headers, PAIRS, type="rl_cai"),
    }
    for job in [*sampled.values(), *unsampled.values()]:
        run_all(runner, job)
    for name, job in [*sampled.items(), *unsampled.items()]:
        labels = label_rows(sessions, job["id"])
        assert len(labels) == job["item_count"], name
        for label in labels:
            assert label.engine_config_hash == engine.config.compute_hash(), name
            if name in sampled:
                # the job's sampling, not the per-call seeds: one hash for the whole job
                assert label.sampling_hash == expected, name
                job_sampling = SamplingParams.model_validate(label.job_params["sampling"])
                assert job_sampling.compute_hash() == label.sampling_hash
            else:
                assert label.sampling_hash is None, name
    results = api.client.get(f"/v1/jobs/{sampled['sl_cai']['id']}/results", headers=admin_headers)
    for item in results.json()["items"]:
        assert item["engine_config_hash"] == engine.config.compute_hash()
        assert item["sampling_hash"] == expected


def test_principle_draws_are_reproducible_across_runs(api, admin_headers, sessions, make_runner):
    jobs = [
        submit(api, admin_headers, ROWS, type="sl_cai", params={"rounds": 2}, seed=11)
        for _ in range(2)
    ]
    for job in jobs:
        run_all(make_runner(), job)
    a, b = (label_rows(sessions, j["id"]) for j in jobs)
    assert [x.principle_ids for x in a] == [x.principle_ids for x in b]
    assert [x.completion for x in a] == [x.completion for x in b]


def test_rl_cai_with_swap_records_both_orders(api, admin_headers, sessions, make_runner):
    job = submit(api, admin_headers, PAIRS, type="compare", params={"swap": True})
    run_all(make_runner(), job)
    labels = label_rows(sessions, job["id"])
    assert len(labels) == len(PAIRS)
    for label in labels:
        # the scripted judge prefers the shorter response in either position
        assert label.p_a_forward > 0.5 and label.p_a_swapped > 0.5
        assert label.p_a == pytest.approx((label.p_a_forward + label.p_a_swapped) / 2)
        assert label.swap_disagreement is False
        assert label.choice_logprobs["forward"] and label.choice_logprobs["swapped"]
        assert len(label.principle_ids) == 1


def test_a_compare_chunk_scores_both_orders_in_one_engine_call(
    api, admin_headers, sessions, make_runner
):
    engine = ScriptedEngine(model_name="m")
    job = submit(api, admin_headers, PAIRS, type="compare", params={"swap": True}, chunk_size=3)
    run_all(make_runner(engine), job)
    # chunks of 3 and 1 items: one call each, forward and swapped orders together
    assert engine.calls == [("choice_logprobs", 6), ("choice_logprobs", 2)]
    labels = label_rows(sessions, job["id"])
    assert len(labels) == len(PAIRS) and all(x.p_a_swapped is not None for x in labels)


def test_chain_of_thought_samples_per_order_then_scores_once(
    api, admin_headers, sessions, make_runner
):
    engine = ScriptedEngine(model_name="m")
    job = submit(
        api,
        admin_headers,
        PAIRS,
        type="compare",
        params={"chain_of_thought": True, "swap": True},
        chunk_size=len(PAIRS),
    )
    run_all(make_runner(engine), job)
    n = len(PAIRS)
    assert engine.calls == [("generate", n), ("generate", n), ("choice_logprobs", 2 * n)]
    labels = label_rows(sessions, job["id"])
    assert all(x.reasoning["forward"] != x.reasoning["swapped"] for x in labels)


def test_rl_cai_generates_two_responses_when_none_supplied(
    api, admin_headers, sessions, make_runner
):
    job = submit(api, admin_headers, ROWS[:3], type="rl_cai", params={"swap": False})
    run_all(make_runner(), job)
    labels = label_rows(sessions, job["id"])
    assert len(labels) == 3
    for label in labels:
        assert label.response_a != label.response_b  # two differently seeded samples
        assert label.p_a_swapped is None and label.swap_disagreement is None


def test_chain_of_thought_labels_are_clamped(api, admin_headers, sessions, make_runner):
    confident = ScriptedEngine(
        model_name="m", choice_fn=lambda c, prefix, ch: (math.log(0.97), math.log(0.01))
    )
    job = submit(
        api, admin_headers, PAIRS, type="compare", params={"chain_of_thought": True, "swap": False}
    )
    run_all(make_runner(confident), job)
    labels = label_rows(sessions, job["id"])
    assert labels and all(0.4 <= label.p_a <= 0.6 for label in labels)
    assert all(label.p_a == 0.6 and label.p_a_forward > 0.9 for label in labels)
    assert all(label.reasoning["forward"] for label in labels)


def test_low_mass_fails_closed_with_a_reason(api, admin_headers, sessions, make_runner):
    unsure = ScriptedEngine(
        model_name="m", choice_fn=lambda c, p, ch: ChoiceLogprobs(math.log(0.05), math.log(0.05))
    )
    job = submit(api, admin_headers, PAIRS, type="compare", params={"min_choice_mass": 0.5})
    run_all(make_runner(unsure), job)
    assert label_rows(sessions, job["id"]) == []
    assert states(sessions, job["id"]) == {"abstained": len(PAIRS)}
    items = api.client.get(
        f"/v1/jobs/{job['id']}/items?state=abstained", headers=admin_headers
    ).json()["items"]
    assert all("mass" in item["last_error"] for item in items)


def test_duplicate_delivery_is_a_no_op(api, admin_headers, sessions, make_runner):
    job = submit(api, admin_headers, ROWS, type="sl_cai", chunk_size=100)
    runner = make_runner()
    assert runner.run_chunk(job["id"], 0).labelled == len(ROWS)
    again = runner.run_chunk(job["id"], 0)
    assert again.claimed == 0 and again.labelled == 0
    assert len(label_rows(sessions, job["id"])) == len(ROWS)


def test_a_taken_over_lease_fences_the_old_worker(api, admin_headers, sessions, make_runner):
    job = submit(api, admin_headers, ROWS[:2], type="sl_cai", chunk_size=10)
    # worker A claims, then stalls past its lease
    with sessions() as s, s.begin():
        stale = leases.claim(s, job["id"], 0, "A", lease_seconds=60, max_attempts=3)
    with sessions() as s, s.begin():
        expire_all_leases(s)
    # worker B takes the expired items over and labels them
    report = make_runner(worker_id="B").run_chunk(job["id"], 0)
    assert report.labelled == 2
    # A wakes up: its fenced writes match nothing
    with sessions() as s, s.begin():
        assert not any(leases.finish(s, c, "A", "done", None) for c in stale)
    labels = label_rows(sessions, job["id"])
    assert [lbl.worker_id for lbl in labels] == ["B", "B"] and [lbl.attempt for lbl in labels] == [
        2,
        2,
    ]


def test_poison_item_fails_alone_after_max_attempts(api, admin_headers, sessions, make_runner):
    rows = [*ROWS[:3], {"prompt": "POISON please"}, *ROWS[3:5]]
    engine = FaultyEngine(ScriptedEngine(model_name="m"), poison="POISON")
    job = submit(api, admin_headers, rows, type="sl_cai", chunk_size=len(rows))
    runner = make_runner(engine, max_attempts=3)
    for _ in range(5):  # each redelivery retries item by item
        runner.run_chunk(job["id"], 0)
    assert states(sessions, job["id"]) == {"done": 5, "failed": 1}
    failed = api.client.get(
        f"/v1/jobs/{job['id']}/items?state=failed", headers=admin_headers
    ).json()["items"]
    assert failed[0]["attempt"] == 3 and "PoisonError" in failed[0]["last_error"]
    assert len(label_rows(sessions, job["id"])) == 5
    assert (
        api.client.get(f"/v1/jobs/{job['id']}", headers=admin_headers).json()["status"]
        == "completed"
    )


def test_cancelled_job_is_not_run(api, admin_headers, sessions, make_runner):
    job = submit(api, admin_headers, ROWS, type="sl_cai")
    api.client.post(f"/v1/jobs/{job['id']}/cancel", headers=admin_headers)
    assert make_runner().run_chunk(job["id"], 0).claimed == 0
    assert label_rows(sessions, job["id"]) == []


def test_sweeper_requeues_expired_leases_and_republishes(
    api, admin_headers, sessions, make_runner, settings
):
    job = submit(api, admin_headers, ROWS[:2], type="sl_cai", chunk_size=10)
    with sessions() as s, s.begin():
        leases.claim(s, job["id"], 0, "dead-worker", lease_seconds=60, max_attempts=3)
        expire_all_leases(s)
    report = sweep(sessions, make_celery(settings), settings)
    assert report.expired == 2 and report.published == 1
    with sessions() as s:
        items = s.scalars(select(WorkItem).where(WorkItem.job_id == job["id"])).all()
    assert {i.status for i in items} == {"queued"} and all(i.published_at for i in items)
    assert all("expired" in i.last_error for i in items)
    assert make_runner().run_chunk(job["id"], 0).labelled == 2


def test_sweeper_fails_items_that_exhausted_their_attempts(api, admin_headers, sessions, settings):
    job = submit(api, admin_headers, ROWS[:1], type="sl_cai")
    with sessions() as s, s.begin():
        s.execute(update(WorkItem).values(attempt=settings.max_attempts - 1))
        leases.claim(s, job["id"], 0, "dead", lease_seconds=60, max_attempts=settings.max_attempts)
        expire_all_leases(s)
    sweep(sessions, make_celery(settings), settings)
    assert states(sessions, job["id"]) == {"failed": 1}
    assert (
        api.client.get(f"/v1/jobs/{job['id']}", headers=admin_headers).json()["status"]
        == "completed"
    )


@pytest.mark.postgres_only
def test_items_locked_by_the_publishers_mark_are_claimed_once_it_commits(
    api, admin_headers, sessions, make_runner, engine
):
    """A publisher marks a chunk published just after sending its message. A worker
    that gets the message first finds the rows locked by that mark: it must wait for
    it, not skip them and return (the message is then acked and nothing re-sends it)."""
    job = submit(api, admin_headers, ROWS[:2], type="sl_cai", chunk_size=10)
    runner = make_runner()
    with engine.connect() as publisher:
        mark = publisher.begin()
        publisher.execute(
            update(WorkItem).where(WorkItem.job_id == job["id"]).values(published_at=utcnow())
        )
        done: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: done.update(r=runner.run_chunk(job["id"], 0)))
        worker.start()
        time.sleep(0.5)  # the worker's claim meets the uncommitted mark
        mark.commit()
    worker.join(30)
    assert done["r"].labelled == 2
    assert states(sessions, job["id"]) == {"done": 2}


@pytest.mark.postgres_only
def test_items_of_a_chunk_locked_part_way_are_claimed_once_released(
    api, admin_headers, sessions, make_runner, engine
):
    """Some of a chunk's rows are locked by another transaction when the worker claims:
    the claim skips them (SKIP LOCKED) and takes the rest. The worker must come back for
    the skipped ones once the lock goes, since no other message will come for them (seen
    under load: 4 of 16 labelled, 12 left queued for good)."""
    job = submit(api, admin_headers, ROWS, type="sl_cai", chunk_size=10)
    runner = make_runner()
    with sessions() as s:
        ids = sorted(s.scalars(select(WorkItem.id).where(WorkItem.job_id == job["id"])))
    with engine.connect() as other:
        held = other.begin()
        other.execute(select(WorkItem.id).where(WorkItem.id.in_(ids[2:])).with_for_update())
        done: dict[str, Any] = {}
        worker = threading.Thread(target=lambda: done.update(r=runner.run_chunk(job["id"], 0)))
        worker.start()
        time.sleep(1.0)  # the worker claimed the two free rows and labelled them
        assert states(sessions, job["id"]) == {"done": 2, "queued": 4}
        held.rollback()
    worker.join(30)
    assert done["r"].claimed == done["r"].labelled == 6
    assert states(sessions, job["id"]) == {"done": 6}


def broker_messages(settings) -> list[Any]:
    folder = settings.broker_dir / "queue"
    return sorted(folder.glob("*.msg")) if folder.exists() else []


def unpublished(sessions, job_id) -> int:
    with sessions() as s:
        return s.scalar(
            select(func.count()).where(WorkItem.job_id == job_id, WorkItem.published_at.is_(None))
        )


def test_the_outbox_drains_every_batch_in_one_call(api, admin_headers, sessions, settings):
    rows = [{"prompt": f"Q{i}?"} for i in range(7)]
    job = submit(api, admin_headers, rows, type="sl_cai", chunk_size=1)
    with sessions() as s, s.begin():  # as if the broker had been down at submission
        s.execute(update(WorkItem).values(published_at=None))
    before = len(broker_messages(settings))
    app = make_celery(settings)
    assert publish_pending(sessions, app, job_id=job["id"], chunks_per_batch=2) == 7
    assert unpublished(sessions, job["id"]) == 0
    assert len(broker_messages(settings)) - before == 7  # one message per chunk, none twice
    assert publish_pending(sessions, app, chunks_per_batch=2) == 0


def test_a_broker_failure_unmarks_only_the_batch_it_broke(
    api, admin_headers, sessions, settings, monkeypatch
):
    rows = [{"prompt": f"Q{i}?"} for i in range(6)]
    job = submit(api, admin_headers, rows, type="sl_cai", chunk_size=1)
    with sessions() as s, s.begin():
        s.execute(update(WorkItem).values(published_at=None))
    sends: list[int] = []
    real = charter.outbox.publish_chunk

    def flaky(app, job_id, chunk, model, producer=None):
        sends.append(chunk)
        if len(sends) == 3:  # the first message of the second batch
            raise ConnectionError("broker went away")
        real(app, job_id, chunk, model, producer)

    monkeypatch.setattr(charter.outbox, "publish_chunk", flaky)
    app = make_celery(settings)
    assert publish_pending(sessions, app, job_id=job["id"], chunks_per_batch=2) == 2
    # the first batch committed; the broken one rolled back, the rest never started
    assert unpublished(sessions, job["id"]) == 4
    monkeypatch.undo()
    assert publish_pending(sessions, app, job_id=job["id"], chunks_per_batch=2) == 4
    assert unpublished(sessions, job["id"]) == 0


def test_a_chunk_write_fences_each_item_by_its_own_attempt(api, admin_headers, sessions):
    job = submit(api, admin_headers, ROWS[:3], type="sl_cai", chunk_size=10)
    with sessions() as s, s.begin():
        claimed = leases.claim(s, job["id"], 0, "A", lease_seconds=60, max_attempts=3)
    with sessions() as s, s.begin():  # the second item was taken over by another worker
        s.execute(update(WorkItem).where(WorkItem.id == claimed[1].item_id).values(attempt=2))
    with sessions() as s, s.begin():
        held = leases.finish_many(s, claimed, "A", "done", None)
    assert held == {claimed[0].item_id, claimed[2].item_id}
    assert states(sessions, job["id"]) == {"done": 2, "running": 1}
