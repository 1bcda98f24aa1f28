"""Fault matrix: leases under redelivery, a paused worker and a skewed worker clock.

Row 6: a chunk runs past Redis's visibility timeout. kombu's clock starts when a
worker reserves the message and is never extended; ``restore_visible`` (run by
consuming workers: once when a worker's consumer starts, then every
``unacked_restore_interval`` x ``unacked_restore_throttle`` = 10 x 10 s) pushes
the message back to the head of the queue while the first worker still runs it.
The database lease decides: the second delivery finds the items held and says so
in its log. The other way round, a worker paused (SIGSTOP) past its lease loses
it to the sweeper and another worker; resumed, its write is fenced and logged.

Row 9: a worker whose clock is an hour ahead or behind (libfaketime in its
environment; the database and the rest of the stack keep the host's clock).
Leases are judged by the database's clock, so the skewed worker neither takes
over live leases nor writes leases that are expired, or held for an hour, by
anyone else's reckoning.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from charter.db.models import Worker, WorkItem
from charter.queue import queue_for
from tests.reliability.conftest import record_fault
from tests.stack import Stack, child_pids, kill_group, rows

ITEMS = 300
CHUNK_SECONDS = 40.0
"""Row 6's slow chunk: it must outlast a fresh worker's start on a loaded machine."""
STACK = "postgres+redis"


def owners_of(worker: subprocess.Popen[bytes]) -> set[str]:
    """The lease owner ids of a worker's pool children ("host:pid")."""
    host = socket.gethostname()
    return {f"{host}:{pid}" for pid in child_pids(worker.pid)}


def wait_for(what: str, check: Callable[[], Any], stack: Stack, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"{what} not seen in {timeout:.0f} s\n{stack.tails()}")


def held_by(stack: Stack, job_id: str, owners: set[str]) -> list[Any]:
    return [i for i in stack.items(job_id) if i.status == "running" and i.lease_owner in owners]


def log_lines(log: Path, *needles: str) -> list[str]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line for line in text.splitlines() if all(n in line for n in needles)]


# --------------------------------------------------------------------------- row 6


def test_chunk_past_the_visibility_timeout_is_redelivered_and_the_copy_claims_nothing(
    make_fault_stack: Callable[..., Stack],
) -> None:
    # Every process's kombu sees a 1 s visibility timeout (the shortest wins anyway).
    stack = make_fault_stack(visibility_timeout_seconds=1, lease_seconds=10.0)
    model = stack.new_model()
    slow = stack.start_worker([model], fault_delay_seconds=CHUNK_SECONDS)
    job = stack.submit(rows(ITEMS, response=True), model, type="critique", chunk_size=12)
    first = stack.wait_running(job["id"])
    owner, chunk = first[0].lease_owner, first[0].chunk
    assert owner in owners_of(slow)
    time.sleep(2.0)  # the slow worker's reservation is now older than the visibility timeout

    # A consumer that starts runs restore_visible at once: the slow worker's message
    # goes back to the head of the queue and is the fresh worker's first delivery.
    redelivered_at = time.monotonic()
    fast = stack.start_worker([model], fault_delay_seconds=0.2)
    fast_log = stack.logs[stack.workers.index(fast)]
    held = f"{len(first)} held by {owner} under lease"
    needle = f"job {job['id']} chunk {chunk}: nothing to claim: {held}"
    wait_for("the redelivered copy's log line", lambda: log_lines(fast_log, needle), stack)
    assert [i.id for i in held_by(stack, job["id"], {owner})] == [i.id for i in first], (
        "the first worker still runs the chunk when its copy arrives elsewhere"
    )

    stack.wait(job["id"])
    recover = time.monotonic() - redelivered_at
    tally = stack.tally({job["id"]: ITEMS})
    labels = stack.labels(job["id"])
    first_ids = {i.id for i in first}
    assert {lbl.worker_id for lbl in labels if lbl.work_item_id in first_ids} == {owner}
    assert {lbl.attempt for lbl in labels} == {1}, "no lease was taken over: nothing died"
    record_fault(
        "chunk outlives the redis visibility timeout (redelivered while running)",
        tally,
        recover_seconds=recover,
        stack=STACK,
        visibility_timeout_seconds=1,
        chunk_seconds=CHUNK_SECONDS,
        redelivered_chunks=len(log_lines(fast_log, "nothing to claim", "under lease")),
    )


def test_worker_paused_past_its_lease_is_fenced_when_it_resumes(
    make_fault_stack: Callable[..., Stack],
) -> None:
    stack = make_fault_stack()  # lease 6 s, sweep 1 s
    model = stack.new_model()
    paused = stack.start_worker([model], fault_delay_seconds=3.0)
    job = stack.submit(rows(ITEMS, response=True), model, type="critique", chunk_size=12)
    first = stack.wait_running(job["id"])
    other = stack.start_worker([model], fault_delay_seconds=0.3)
    owner = first[0].lease_owner
    assert owner in owners_of(paused)

    os.killpg(paused.pid, signal.SIGSTOP)  # main process and pool child: a frozen VM
    stopped_at = time.monotonic()
    try:
        held = {i.id for i in held_by(stack, job["id"], {owner})}
        assert held, f"{owner} held nothing when it was paused"

        # The sweeper expires the lease; the other worker claims the items again.
        def taken_over() -> bool:
            return any(i.id in held and i.attempt >= 2 for i in stack.items(job["id"]))

        wait_for("another worker claiming the paused worker's items", taken_over, stack)
        paused_seconds = time.monotonic() - stopped_at
    finally:
        os.killpg(paused.pid, signal.SIGCONT)

    paused_log = stack.logs[stack.workers.index(paused)]
    needle = f"job {job['id']} chunk {first[0].chunk}: fenced {len(held)} of {len(held)} items"
    wait_for(
        "the resumed worker's fenced write in its log", lambda: log_lines(paused_log, needle), stack
    )
    stack.wait(job["id"])
    recover = time.monotonic() - stopped_at
    tally = stack.tally({job["id"]: ITEMS})
    retried = [lbl for lbl in stack.labels(job["id"]) if lbl.work_item_id in held]
    assert len(retried) == len(held)
    assert all(lbl.worker_id != owner and lbl.attempt >= 2 for lbl in retried)
    assert other.poll() is None and paused.poll() is None
    record_fault(
        "worker paused (SIGSTOP) past its lease, then resumed (its write is fenced)",
        tally,
        recover_seconds=recover,
        stack=STACK,
        paused_seconds=round(paused_seconds, 2),
        fenced_items=len(held),
    )


# --------------------------------------------------------------------------- row 9


def faketime_library() -> str:
    """libfaketime (Debian's ``faketime`` package), or skip; under CI its absence fails."""
    found = sorted(Path("/usr/lib").glob("*/faketime/libfaketimeMT.so.1"))
    if not found:
        reason = "libfaketime is not installed (apt-get install faketime)"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return str(found[0])


def skew_env(skew: int) -> dict[str, str]:
    return {
        "LD_PRELOAD": faketime_library(),
        "FAKETIME": f"{skew:+d}",  # seconds from the real clock
        # The monotonic clock moves with it (still monotonic). FAKETIME_DONT_FAKE_MONOTONIC
        # would keep it true, but then its clock_nanosleep fails Python's time.sleep (EINVAL).
    }


def start_skewed_worker(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, models: list[str], skew: int, **overrides: Any
) -> subprocess.Popen[bytes]:
    env = skew_env(skew)
    probe = subprocess.run(
        [sys.executable, "-c", "import time; print(time.time())"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    offset = float(probe.stdout) - time.time()
    assert abs(offset - skew) < 60, f"libfaketime did not shift the clock ({offset:+.0f} s)"
    with monkeypatch.context() as patch:  # only this worker's process inherits it
        for name, value in env.items():
            patch.setenv(name, value)
        return stack.start_worker(models, **overrides)


def duplicate_every_message(stack: Stack, model: str, count: int) -> None:
    """Two adjacent copies of each queued message (the payload kombu's restore_visible
    pushes back, less its redelivered flag): two idle workers get one chunk at once."""
    import redis

    client = redis.Redis.from_url(stack.settings.broker_url or "")
    queue = queue_for(model)
    try:
        wait_for("every chunk's message", lambda: client.llen(queue) == count, stack)
        messages = client.lrange(queue, 0, -1)
        pipe = client.pipeline(transaction=True)
        pipe.delete(queue)
        pipe.rpush(queue, *[m for m in messages for _ in range(2)])
        pipe.execute()
    finally:
        client.close()


def worker_clock_offset(stack: Stack, owner: str) -> float | None:
    """How far a worker's clock is from the database's: its heartbeat writes its own time."""
    with stack.db.connect() as conn:
        row = conn.execute(
            select(Worker.last_seen, func.statement_timestamp()).where(Worker.id == owner)
        ).first()
    return None if row is None else (row[0] - row[1]).total_seconds()


def freshly_claimed(stack: Stack, job_id: str, owner: str, lease_seconds: float) -> list[int]:
    """Items ``owner`` claimed within the last second, by the database's clock: its chunk
    has most of its run ahead, so a kill now finds it holding them."""
    with stack.db.connect() as conn:
        return list(
            conn.scalars(
                select(WorkItem.id).where(
                    WorkItem.job_id == job_id,
                    WorkItem.status == "running",
                    WorkItem.lease_owner == owner,
                    WorkItem.lease_expires_at
                    > func.statement_timestamp() + timedelta(seconds=lease_seconds - 1),
                )
            )
        )


@pytest.mark.parametrize("skew", [3600, -3600], ids=["ahead-1h", "behind-1h"])
def test_worker_with_a_skewed_clock_judges_leases_by_the_database_clock(
    make_fault_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch, skew: int
) -> None:
    lease = 10.0  # a loaded machine's late lease extension must not pass for a skew effect
    stack = make_fault_stack(lease_seconds=lease)
    model = stack.new_model()
    job = stack.submit(rows(ITEMS, response=True), model, type="critique", chunk_size=12)
    duplicate_every_message(stack, model, job["chunk_count"])
    skewed = start_skewed_worker(stack, monkeypatch, [model], skew, fault_delay_seconds=2.0)
    normal = stack.start_worker([model], fault_delay_seconds=1.0)

    (owner,) = wait_for("the skewed worker's pool child", lambda: owners_of(skewed), stack)
    (offset,) = wait_for(
        "the skewed worker's heartbeat",
        lambda: [o for o in [worker_clock_offset(stack, owner)] if o is not None],
        stack,
    )
    assert abs(offset - skew) < 60, f"the skewed worker's clock is {offset:+.0f} s off"

    # Both race on the copies for a third of the job; then the skewed worker dies in a chunk.
    def in_a_chunk_after_a_third() -> list[int]:
        done = sum(i.status == "done" for i in stack.items(job["id"]))
        return freshly_claimed(stack, job["id"], owner, lease) if done >= ITEMS // 3 else []

    wait_for(
        "the skewed worker starting a chunk under a live lease after a third of the job",
        in_a_chunk_after_a_third,
        stack,
    )
    kill_group(skewed)
    killed_at = time.monotonic()
    held = {i.id for i in held_by(stack, job["id"], {owner})}
    assert held, "the killed worker held its chunk"

    stack.wait(job["id"])  # its leases expire by the database's clock: seconds, not an hour
    recover = time.monotonic() - killed_at
    tally = stack.tally({job["id"]: ITEMS})
    labels = stack.labels(job["id"])
    logs = [stack.logs[stack.workers.index(w)] for w in (skewed, normal)]
    under_lease = sum(len(log_lines(log, "nothing to claim", "under lease")) for log in logs)
    by_skewed = [lbl for lbl in labels if lbl.worker_id == owner]
    retried = [lbl for lbl in labels if lbl.work_item_id in held]
    assert by_skewed, "the skewed worker labelled some items before it was killed"
    # Nothing but the kill took a lease over: no live lease was judged expired.
    assert all(lbl.attempt == 1 for lbl in labels if lbl.work_item_id not in held)
    assert len(retried) == len(held)
    assert all(lbl.attempt >= 2 and lbl.worker_id != owner for lbl in retried)
    assert under_lease >= 1, "no copy met its chunk still running: the race did not happen"
    assert normal.poll() is None
    record_fault(
        f"worker clock {'ahead' if skew > 0 else 'behind'} by 1 h (libfaketime) with "
        "duplicate deliveries, then that worker SIGKILLed",
        tally,
        recover_seconds=recover,
        stack=STACK,
        skew_seconds=skew,
        measured_skew_seconds=round(offset),
        copies_found_under_lease=under_lease,
        labels_by_skewed_worker=len(by_skewed),
        killed_holding=len(held),
    )
