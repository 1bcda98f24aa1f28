"""The sweeper: repairs what the broker loses.

Each pass (1) re-queues items whose lease expired (their worker died or
stalled) or fails them at ``max_attempts``, (2) publishes every queued chunk
that was never published (the outbox: a broker outage at submission), (3)
re-publishes queued chunks whose message is older than
``republish_after_seconds`` (a broker that lost its queue, e.g. Redis restarted
without AOF), (4) completes jobs with no active items left, and (5) deletes
expired Idempotency-Key records. Safe to run
several at once: every step is idempotent and claims rows with SKIP LOCKED.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from charter import idempotency
from charter.db.models import Job, WorkItem, utcnow
from charter.dispatch import publish_pending
from charter.settings import Settings
from workers import leases

log = logging.getLogger(__name__)
ALIVE_FILE = Path("/tmp/charter-sweeper-alive")  # container healthcheck


@dataclass
class SweepReport:
    expired: int = 0
    published: int = 0
    completed_jobs: int = 0
    idempotency_pruned: int = 0


def sweep(sessions: sessionmaker[Session], app: Celery, settings: Settings) -> SweepReport:
    report = SweepReport()
    with sessions() as session, session.begin():
        report.expired, _ = leases.expire_leases(session, settings.max_attempts)
        cutoff = utcnow() - timedelta(seconds=settings.republish_after_seconds)
        session.execute(
            update(WorkItem)
            .where(WorkItem.status == "queued", WorkItem.published_at < cutoff)
            .values(published_at=None)
        )
    report.published = publish_pending(sessions, app)
    with sessions() as session, session.begin():
        open_jobs = session.scalars(
            select(Job.id).where(Job.status.not_in(("completed", "cancelled")))
        ).all()
        report.completed_jobs = sum(
            leases.complete_if_done(session, job_id) for job_id in open_jobs
        )
    with sessions() as session, session.begin():
        report.idempotency_pruned = idempotency.prune(session)
    return report


def run_forever(
    sessions: sessionmaker[Session], app: Celery, settings: Settings, stop=None
) -> None:  # type: ignore[no-untyped-def]
    while stop is None or not stop.is_set():
        started = time.monotonic()
        try:
            report = sweep(sessions, app, settings)
            if any(vars(report).values()):
                log.info("sweep: %s", report)
            ALIVE_FILE.touch()
        except Exception:  # keep sweeping; say what broke
            log.exception("sweep failed")
        remaining = settings.sweep_interval_seconds - (time.monotonic() - started)
        if stop is not None:
            stop.wait(max(remaining, 0.0))
        else:
            time.sleep(max(remaining, 0.0))
