"""The sweeper: repairs what the broker loses.

Each pass (1) re-queues items whose lease expired (their worker died or
stalled) or fails them at ``max_attempts``, (2) publishes every queued chunk
that was never published (the outbox: a broker outage at submission), (3)
re-publishes queued chunks whose message is older than
``republish_after_seconds`` when the broker holds fewer messages than it should
(it lost its queue, e.g. Redis restarted without AOF), (4) completes jobs with
no active items left, (5) deletes expired Idempotency-Key records, and (6) deletes
audit events older than ``audit_retention_days`` when it is set; run by
``run_forever``, it also (7) sends due webhook deliveries. Safe to
run several at once: every step is idempotent and claims rows with SKIP LOCKED.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from celery import Celery
from sqlalchemy import ColumnElement, and_, delete, func, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from charter import idempotency
from charter.core.jobs import FINAL_JOB_STATUSES, ItemState
from charter.db.models import AuditEvent, Job, WorkItem, utcnow
from charter.outbox import publish_pending
from charter.queue import queue_for, queue_lengths
from charter.settings import Settings
from workers import leases, webhook_delivery

log = logging.getLogger(__name__)
ALIVE_FILE = Path("/tmp/charter-sweeper-alive")  # container healthcheck
AUDIT_PRUNE_BATCH = 5000


@dataclass
class SweepReport:
    expired: int = 0
    republished: int = 0
    published: int = 0
    completed_jobs: int = 0
    idempotency_pruned: int = 0
    audit_pruned: int = 0
    webhooks_attempted: int = 0


def sweep(
    sessions: sessionmaker[Session],
    app: Celery,
    settings: Settings,
    http: httpx.Client | None = None,
) -> SweepReport:
    """One pass; given ``http``, it also sends the due webhook deliveries on it."""
    report = SweepReport()
    with sessions() as session, session.begin():
        report.expired, _ = leases.expire_leases(session, settings.max_attempts)
    republished = unmark_lost(sessions, app, settings.republish_after_seconds)
    if republished is not None:  # None: the broker is down, a publish would only wait on it
        report.republished = republished
        report.published = publish_pending(sessions, app)
    with sessions() as session, session.begin():
        open_jobs = session.scalars(
            select(Job.id).where(Job.status.not_in(FINAL_JOB_STATUSES))
        ).all()
        report.completed_jobs = sum(
            leases.complete_if_done(session, job_id) for job_id in open_jobs
        )
    with sessions() as session, session.begin():
        report.idempotency_pruned = idempotency.prune(session)
    if settings.audit_retention_days is not None:
        keep = timedelta(days=settings.audit_retention_days)
        report.audit_pruned = prune_audit(sessions, utcnow() - keep)
    if http is not None:
        report.webhooks_attempted = webhook_delivery.deliver_due(sessions, http, settings)
    return report


def prune_audit(
    sessions: sessionmaker[Session], before: datetime, batch: int = AUDIT_PRUNE_BATCH
) -> int:
    """Delete the audit events created before ``before``, oldest first, ``batch`` per
    transaction (short locks, no huge transaction after a long outage); returns how many."""
    deleted = 0
    while True:
        with sessions() as session, session.begin():
            oldest = (
                select(AuditEvent.id)
                .where(AuditEvent.created_at < before)
                .order_by(AuditEvent.id)
                .limit(batch)
            )
            result = session.execute(delete(AuditEvent).where(AuditEvent.id.in_(oldest)))
            count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        deleted += count
        if count < batch:
            return deleted


def _stale(cutoff: ColumnElement[datetime] | datetime) -> ColumnElement[bool]:
    return and_(WorkItem.status == ItemState.QUEUED, WorkItem.published_at < cutoff)


def _of_models(models: list[str]) -> ColumnElement[bool]:
    return WorkItem.job_id.in_(select(Job.id).where(Job.model.in_(models)))


def _queued_models(session: Session, condition: ColumnElement[bool]) -> list[str]:
    """The models of the jobs that have queued items matching ``condition``."""
    return sorted(
        session.scalars(
            select(Job.model).join(WorkItem, WorkItem.job_id == Job.id).where(condition).distinct()
        )
    )


def _sent_chunks(session: Session, models: list[str], before: datetime) -> int:
    """Queued chunks of ``models`` whose message went out before ``before``: each
    should have its message in the queue still."""
    chunks = (
        select(WorkItem.job_id, WorkItem.chunk)
        .where(
            _of_models(models),
            WorkItem.status == ItemState.QUEUED,
            WorkItem.published_at < before,
        )
        .distinct()
        .subquery()
    )
    return session.scalar(select(func.count()).select_from(chunks)) or 0


def unmark_lost(sessions: sessionmaker[Session], app: Celery, after_seconds: float) -> int | None:
    """Unmark the queued chunks whose message the broker lost, for the outbox to send
    again: how many items were unmarked, or None when the broker cannot be reached.

    A chunk still queued ``after_seconds`` after its message went out either waits
    behind others or lost its message (Redis restarted empty; a message dropped
    between a worker's pop and its bookkeeping). The broker tells them apart: a
    queue holding ``missing`` fewer messages than its models have queued chunks
    already sent has lost that many, and the ``missing`` chunks sent longest ago go
    out again. Those are the lost ones: the queue is first in, first out, so what
    is still in it was sent after what was taken or wiped from it. A queue holding
    as many messages as it should is a backlog and is left alone. (Re-sending every
    old chunk each period instead added a copy of a waiting backlog to the queue per
    period: 168 deliveries for 60 chunks after a one-minute outage.)

    Compared per queue, not per model: every run's model shares one queue
    (``charter.queue.RUN_QUEUE``), so its count is set against all their sent chunks
    (stale or not), and the oldest of them across the runs go out again; per model,
    one run's backlog would hide another's lost message.

    The queue is counted before the chunks, and only chunks sent before that count
    are compared with it, so a submission in between is not mistaken for a loss. A
    message that a worker has popped but not claimed yet does look lost: that rare
    false alarm sends one chunk twice, and the copy finds nothing to claim.
    """
    with sessions() as session:
        cutoff = leases.db_now(session) - timedelta(seconds=after_seconds)
        stale = _queued_models(session, _stale(cutoff))
    if not stale:
        return 0
    counted_at = utcnow()
    try:
        waiting = queue_lengths(app, stale)
    except Exception as exc:  # broker down: nothing can be sent either
        log.warning("cannot count the broker's queues, not publishing: %s", exc)
        return None
    unmarked = 0
    with sessions() as session, session.begin():
        # Every model whose sent chunks may be in those queues, stale or not: the open
        # jobs' (a short read of jobs, not of their items).
        open_models = session.scalars(
            select(Job.model).where(Job.status.not_in(FINAL_JOB_STATUSES)).distinct()
        )
        groups: dict[str, list[str]] = {}
        for model in sorted(set(stale) | set(open_models)):
            if queue_for(model) in waiting:
                groups.setdefault(queue_for(model), []).append(model)
        for queue, models in sorted(groups.items()):
            missing = _sent_chunks(session, models, counted_at) - waiting[queue]
            if missing <= 0:
                continue
            oldest = [
                tuple(row)
                for row in session.execute(
                    select(WorkItem.job_id, WorkItem.chunk)
                    .where(_of_models(models), _stale(cutoff))
                    .group_by(WorkItem.job_id, WorkItem.chunk)
                    .order_by(func.min(WorkItem.published_at))
                    .limit(missing)
                )
            ]
            if not oldest:
                continue
            result = session.execute(
                update(WorkItem)
                .where(tuple_(WorkItem.job_id, WorkItem.chunk).in_(oldest), _stale(cutoff))
                .values(published_at=None)
            )
            unmarked += result.rowcount
            log.warning(
                "%s: %d message(s) missing from the queue, re-sending %d old chunk(s)",
                queue,
                missing,
                len(oldest),
            )
    return unmarked


def run_forever(
    sessions: sessionmaker[Session], app: Celery, settings: Settings, stop=None
) -> None:  # type: ignore[no-untyped-def]
    with webhook_delivery.http_client(settings) as http:
        _loop(sessions, app, settings, stop, http)


def _loop(sessions, app, settings, stop, http):  # type: ignore[no-untyped-def]
    while stop is None or not stop.is_set():
        started = time.monotonic()
        try:
            report = sweep(sessions, app, settings, http)
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
