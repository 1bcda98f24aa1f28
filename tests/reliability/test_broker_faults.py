"""Fault matrix, broker rows: Redis loses everything, or is gone for a minute.

Both rows run a 300-item job through two real worker processes and hit the
broker while chunks are queued and running. The private Redis keeps nothing on
disk, so after either fault the queue and the unacked hash are empty: every
message of the job is gone. Recovery comes from PostgreSQL alone: the sweeper
re-publishes queued chunks whose message is older than
``republish_after_seconds`` (short here, so the test recovers in seconds) and
publishes chunks that were never published (a submission during the outage);
items that were running when the broker went finish under their lease, and
their lost acks only cost a redelivery that never comes (the wiped broker
forgot it) or finds nothing to do.

Workers must reconnect and consume again (the Redis-restart stall of
celery#8091, fixed in kombu 5.4; its recurrences GH-9705 and #7515 are fixed in
Celery 5.7, the oldest this project allows): both workers have to write labels
after the broker is back, from the same pool processes.

Reported beside the counts: ``deliveries``, the task messages the workers got
(equal to ``chunks`` when nothing was sent twice: the sweeper re-sends only as
many chunks as the queue is missing), and ``resumed_seconds``, from the fault
(row 2) or the broker's return (row 4b) to the first label of an item that was
queued when its message was lost.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from charter.db.models import Label
from charter.db.session import session_factory
from charter.queue import make_celery
from tests.reliability.conftest import record_fault
from tests.servers import PrivateRedis
from tests.stack import Stack, child_pids, rows
from workers.consumer import RECONNECT_MAX_SECONDS
from workers.sweeper import sweep

ITEMS = 300
CHUNK_SIZE = 10
DELAY = 0.8  # seconds per engine call; one call per critique chunk
REPUBLISH_AFTER = 4.0
OUTAGE_SECONDS = 60.0
RECOVERY_TIMEOUT = 240.0


def faulty_stack(make_fault_stack: Callable[..., Stack]) -> Stack:
    return make_fault_stack(republish_after_seconds=REPUBLISH_AFTER)


def submit(stack: Stack, model: str, marker: str) -> dict[str, Any]:
    return stack.submit(
        rows(ITEMS, marker, response=True), model, type="critique", chunk_size=CHUNK_SIZE
    )


def wait_until_part_done(stack: Stack, job_id: str, done: int, timeout: float = 120.0) -> None:
    """Until ``done`` items are labelled: the job is then queued and running at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [i.status for i in stack.items(job_id)]
        if states.count("done") >= done:
            assert "queued" in states, "the job ran out of queued work before the fault"
            return
        time.sleep(0.2)
    pytest.fail(f"job {job_id} did not reach {done} labels in {timeout:.0f} s\n{stack.tails()}")


def labellers_since(stack: Stack, since: datetime) -> dict[str, int]:
    """Labels written after ``since``, per worker process ("host:pid")."""
    with stack.db.connect() as conn:
        return dict(
            conn.execute(
                select(Label.worker_id, func.count())
                .where(Label.created_at > since)
                .group_by(Label.worker_id)
            ).all()
        )


def queued_ids(stack: Stack, job_id: str) -> set[int]:
    return {i.id for i in stack.items(job_id) if i.status == "queued"}


def resumed_after(stack: Stack, since: datetime, items: set[int]) -> float:
    """Seconds from ``since`` to the first label of ``items`` (queued when the broker
    lost their messages, so labelled only once a message was sent again)."""
    with stack.db.connect() as conn:
        first = conn.scalar(select(func.min(Label.created_at)).where(Label.work_item_id.in_(items)))
    return (first - since).total_seconds()


def deliveries(stack: Stack) -> int:
    """Task messages the workers received, from their logs (copies included)."""
    pattern = re.compile(r"Task labels\.run_chunk\[[^\]]+\] received")
    return sum(len(pattern.findall(log.read_text(errors="replace"))) for log in stack.logs)


def reconnect_waits(stack: Stack) -> list[float]:
    """The waits between a worker's attempts to reach the broker, from its logs."""
    pattern = re.compile(r"Trying again in ([0-9.]+) seconds")
    return [
        float(wait)
        for log in stack.logs
        for wait in pattern.findall(log.read_text(errors="replace"))
    ]


def pool_children(stack: Stack) -> dict[int, set[int]]:
    return {w.pid: set(child_pids(w.pid)) for w in stack.workers}


def test_sweeper_resends_only_what_the_broker_lost(
    make_fault_stack: Callable[..., Stack], private_redis: PrivateRedis
) -> None:
    """No worker: a job's 30 messages wait in the queue. Older than
    ``republish_after_seconds`` they are a backlog, not a loss, and are left alone;
    once Redis restarted empty, every chunk goes out again, once."""
    stack = make_fault_stack(sweeper=False, republish_after_seconds=0.5)
    model = stack.new_model()
    job = submit(stack, model, " backlog")
    queue = f"model.{model}"
    assert stack.broker_state()[queue]["length"] == job["chunk_count"]
    producer = make_celery(stack.settings, name="sweeper-under-test")
    sessions = session_factory(stack.db)
    try:
        time.sleep(1.0)  # every message is now older than republish_after_seconds
        for _ in range(3):
            assert sweep(sessions, producer, stack.settings).republished == 0
        assert stack.broker_state()[queue]["length"] == job["chunk_count"], "a backlog copied"

        private_redis.restart()
        report = sweep(sessions, producer, stack.settings)
        assert (report.republished, report.published) == (ITEMS, job["chunk_count"])
        time.sleep(1.0)
        assert sweep(sessions, producer, stack.settings).republished == 0
        assert stack.broker_state()[queue]["length"] == job["chunk_count"]
    finally:
        producer.close()


def test_redis_restart_without_persistence_mid_job(
    make_fault_stack: Callable[..., Stack], private_redis: PrivateRedis
) -> None:
    stack = faulty_stack(make_fault_stack)
    model = stack.new_model()
    for _ in range(2):
        stack.start_worker([model], fault_delay_seconds=DELAY)
    job = submit(stack, model, " restart")
    wait_until_part_done(stack, job["id"], ITEMS // 4)
    running = sum(i.status == "running" for i in stack.items(job["id"]))
    children = pool_children(stack)

    restarted_at = datetime.now(UTC)
    private_redis.restart()  # SIGKILL, then an empty server on the same port
    healed = time.monotonic()
    stranded = queued_ids(stack, job["id"])
    assert stack.broker_state()[f"model.{model}"]["length"] == 0, "the queue survived"

    stack.wait(job["id"], timeout=RECOVERY_TIMEOUT)
    recover = time.monotonic() - healed
    tally = stack.tally({job["id"]: ITEMS})

    assert all(w.poll() is None for w in stack.workers), "a worker exited"
    assert pool_children(stack) == children, "a pool process was replaced"
    after = labellers_since(stack, restarted_at)
    assert len(after) == 2, f"a worker stopped consuming after the restart: {after}"
    received = deliveries(stack)
    assert received <= 1.5 * job["chunk_count"], f"{received} deliveries: a flood"
    record_fault(
        "redis restarted without persistence mid-job",
        tally,
        recover_seconds=recover,
        stack="postgres+redis",
        running_at_fault=running,
        resumed_seconds=round(resumed_after(stack, restarted_at, stranded), 2),
        chunks=job["chunk_count"],
        deliveries=received,
        republish_after_seconds=REPUBLISH_AFTER,
    )


def test_redis_restart_with_persistence_mid_job(
    make_fault_stack: Callable[..., Stack], private_redis: PrivateRedis
) -> None:
    """The same SIGKILL with an append-only file fsynced on every write: the queue and
    the unacked hash survive the restart, so nothing needs re-sending. The sweeper must
    see that and send (almost) nothing twice."""
    private_redis.appendonly = True
    private_redis.restart()  # a persistent server from the start of the job
    try:
        stack = faulty_stack(make_fault_stack)
        model = stack.new_model()
        for _ in range(2):
            stack.start_worker([model], fault_delay_seconds=DELAY)
        job = submit(stack, model, " persistent")
        wait_until_part_done(stack, job["id"], ITEMS // 4)
        running = sum(i.status == "running" for i in stack.items(job["id"]))
        before = stack.broker_state()[f"model.{model}"]["length"]

        restarted_at = datetime.now(UTC)
        private_redis.restart()  # SIGKILL, then the same port, reloading the AOF
        healed = time.monotonic()
        kept = stack.broker_state()[f"model.{model}"]["length"]
        assert kept > 0 and kept >= before - 2 * 2, f"the queue was lost: {before} -> {kept}"

        stack.wait(job["id"], timeout=RECOVERY_TIMEOUT)
        recover = time.monotonic() - healed
        tally = stack.tally({job["id"]: ITEMS})

        assert all(w.poll() is None for w in stack.workers), "a worker exited"
        after = labellers_since(stack, restarted_at)
        assert len(after) == 2, f"a worker stopped consuming after the restart: {after}"
        received = deliveries(stack)
        assert received <= 1.2 * job["chunk_count"], f"{received} deliveries: re-sent needlessly"
        record_fault(
            "redis restarted with AOF (appendfsync always) mid-job",
            tally,
            recover_seconds=recover,
            stack="postgres+redis(aof)",
            running_at_fault=running,
            queue_before=before,
            queue_after_restart=kept,
            chunks=job["chunk_count"],
            deliveries=received,
        )
    finally:
        private_redis.appendonly = False
        private_redis.restart()


def test_broker_down_for_a_minute_mid_job(
    make_fault_stack: Callable[..., Stack],
    private_redis: PrivateRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stack = faulty_stack(make_fault_stack)
    model = stack.new_model()
    for _ in range(2):
        stack.start_worker([model], fault_delay_seconds=DELAY)
    job = submit(stack, model, " outage")
    wait_until_part_done(stack, job["id"], ITEMS // 4)
    running = sum(i.status == "running" for i in stack.items(job["id"]))
    children = pool_children(stack)
    sweeper = next(t for t in threading.enumerate() if t.name == "sweeper")

    caplog.set_level(logging.WARNING, logger="workers.sweeper")
    private_redis.stop()
    down = time.monotonic()
    time.sleep(5)  # the workers notice; the running chunks finish without the broker
    started = time.monotonic()
    during = submit(stack, model, " during")  # 202: committed, published later
    submit_seconds = time.monotonic() - started
    assert submit_seconds < 30, "a submission waited on the broker"
    assert stack.client.job(during["id"])["counts"]["queued"] == ITEMS
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down)))
    assert all(w.poll() is None for w in stack.workers), "a worker exited during the outage"
    assert sweeper.is_alive(), "the sweeper died during the outage"
    assert [i for i in stack.items(during["id"]) if i.published_at is not None] == []

    stranded = queued_ids(stack, job["id"]) | queued_ids(stack, during["id"])
    returned_at = datetime.now(UTC)
    private_redis.start()  # empty: whatever was queued is gone
    back = time.monotonic()
    stack.wait(job["id"], timeout=RECOVERY_TIMEOUT)
    stack.wait(during["id"], timeout=RECOVERY_TIMEOUT)
    recover = time.monotonic() - back
    tally = stack.tally({job["id"]: ITEMS, during["id"]: ITEMS})

    assert all(w.poll() is None for w in stack.workers), "a worker exited"
    assert pool_children(stack) == children, "a pool process was replaced"
    assert sweeper.is_alive(), "the sweeper died"
    crashes = [r for r in caplog.records if r.name == "workers.sweeper" and r.exc_info]
    assert crashes == [], f"sweeps failed: {[r.getMessage() for r in crashes]}"
    after = labellers_since(stack, returned_at)
    assert len(after) == 2, f"a worker stopped consuming after the outage: {after}"
    waits = reconnect_waits(stack)
    assert waits and max(waits) <= RECONNECT_MAX_SECONDS, f"reconnect back-off: {waits}"
    chunks = job["chunk_count"] + during["chunk_count"]
    received = deliveries(stack)
    assert received <= 1.5 * chunks, f"{received} deliveries for {chunks} chunks: a flood"
    record_fault(
        "redis down for 60 s mid-job, restarted empty",
        tally,
        recover_seconds=recover,
        stack="postgres+redis",
        running_at_fault=running,
        outage_seconds=round(back - down, 1),
        resumed_seconds=round(resumed_after(stack, returned_at, stranded), 2),
        submit_during_outage_seconds=round(submit_seconds, 2),
        chunks=chunks,
        deliveries=received,
        republish_after_seconds=REPUBLISH_AFTER,
    )
