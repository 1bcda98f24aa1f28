"""The outbox: chunks whose items were never published go to the broker.

Called right after a job's transaction commits, and periodically by the sweeper,
so a broker outage delays work but never loses it. Publishing happens before the
rows are marked: a crash in between re-publishes, which the lease makes harmless.
A worker that gets the message before the mark commits finds the rows locked and
waits for the mark rather than skipping them (``workers.runner``).
"""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from charter.db.models import Job, WorkItem, utcnow
from charter.queue import publish_chunk

log = logging.getLogger(__name__)


def publish_pending(
    sessions: sessionmaker[Session], app: Celery, *, job_id: str | None = None, limit: int = 1000
) -> int:
    """Publish up to ``limit`` unpublished chunks; returns how many were sent."""
    with sessions() as session:
        query = (
            select(WorkItem.job_id, WorkItem.chunk, Job.model)
            .join(Job, Job.id == WorkItem.job_id)
            .where(WorkItem.status == "queued", WorkItem.published_at.is_(None))
            .distinct()
            .limit(limit)
        )
        if job_id is not None:
            query = query.where(WorkItem.job_id == job_id)
        chunks = session.execute(query).all()
    sent = 0
    for chunk_job_id, chunk, model in chunks:
        try:
            publish_chunk(app, chunk_job_id, chunk, model)
        except Exception as exc:  # broker down: the sweeper retries later
            log.warning("publish failed for job %s chunk %s: %s", chunk_job_id, chunk, exc)
            break
        with sessions() as session, session.begin():
            session.execute(
                update(WorkItem)
                .where(
                    WorkItem.job_id == chunk_job_id,
                    WorkItem.chunk == chunk,
                    WorkItem.published_at.is_(None),
                )
                .values(published_at=utcnow())
            )
        sent += 1
    return sent
