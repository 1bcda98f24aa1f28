"""The outbox: chunks whose items were never published go to the broker.

Called right after a job's transaction commits, by the sweeper, and by a worker
that gave items back; each call drains until nothing is left. A batch is one
transaction: one ``UPDATE ... RETURNING`` marks up to ``chunks_per_batch`` chunks,
their messages are sent over one producer, and only then does the mark commit.
So the mark is durable only once its messages were written: a broker failure
rolls it back (the next drain sends them), and so does a crash, because an
uncommitted mark dies with its connection. A crash after the messages left but
before the commit sends them twice, which the lease makes harmless. Concurrent
drains never send a chunk twice: the second waits for the first's rows and
finds them marked. A worker that gets a message before its mark commits finds
the rows locked and waits for the commit (``workers.runner``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from charter.core.jobs import ItemState
from charter.db.models import Job, WorkItem, utcnow
from charter.queue import batch_producer, publish_chunk

log = logging.getLogger(__name__)

CHUNKS_PER_BATCH = 1000
"""Chunks marked and sent per transaction: one UPDATE and one pipelined producer each.
Workers that get a message first wait for the batch to commit, so it stays small."""


def _unpublished(items: Any = WorkItem):  # type: ignore[no-untyped-def]
    """Queued and never published; ``items`` is the entity or its table's columns."""
    return and_(items.status == ItemState.QUEUED, items.published_at.is_(None))


def _mark(session: Session, job_id: str, first: int, last: int) -> list[int]:
    """Mark the unpublished items of chunks ``first..last-1``; the chunks they belong to.

    A plain UPDATE on the (job_id, chunk) index: an ``id IN (SELECT ... SKIP LOCKED)``
    form made PostgreSQL hash-join a scan of the whole table per batch. A row that a
    claimer or another drain holds is waited for, then re-checked: claimed or marked
    meanwhile, it is no longer unpublished and is not sent twice.
    """
    items = WorkItem.__table__.c  # a Core UPDATE: the ORM's bulk-update path costs more CPU
    marked = session.scalars(
        update(WorkItem.__table__)
        .where(
            items.job_id == job_id,
            items.chunk >= first,
            items.chunk < last,
            _unpublished(items),
        )
        .values(published_at=utcnow())
        .returning(items.chunk)
    )
    return sorted(set(marked))


def _pending_range(
    sessions: sessionmaker[Session], job_id: str
) -> tuple[str | None, int | None, int | None]:
    """The job's model and the first and last chunk that still has unpublished items."""
    with sessions() as session:
        model = session.scalar(select(Job.model).where(Job.id == job_id))
        first, last = session.execute(
            select(func.min(WorkItem.chunk), func.max(WorkItem.chunk)).where(
                WorkItem.job_id == job_id, _unpublished()
            )
        ).one()
    return model, first, last


def _drain_job(
    sessions: sessionmaker[Session],
    app: Celery,
    job_id: str,
    chunks_per_batch: int,
    max_batches: int | None = None,
    fresh: tuple[str, int] | None = None,
) -> tuple[int, bool]:
    """Publish a job's unpublished chunks in batches: (chunks sent, whether the broker failed).

    ``fresh`` is (model, chunk count) of a job that just committed: its range is known,
    so it is not read back (a third of a submission's database work)."""
    if fresh is not None:
        model, first, last = fresh[0], 0, fresh[1] - 1
    else:
        model, first, last = _pending_range(sessions, job_id)
    if model is None or first is None or last is None:
        return 0, False
    sent = batches = 0
    # Chunk ranges walk the (job_id, chunk) index: each batch reads only its own rows.
    for start in range(first, last + 1, chunks_per_batch):
        if max_batches is not None and batches >= max_batches:
            break
        with sessions() as session:
            session.begin()
            chunks = _mark(session, job_id, start, start + chunks_per_batch)
            if not chunks:
                session.rollback()
                continue
            try:
                with batch_producer(app, [model]) as producer:
                    for chunk in chunks:
                        publish_chunk(app, job_id, chunk, model, producer)
            except Exception as exc:  # broker down: the rollback unmarks, the sweeper retries
                session.rollback()
                log.warning("publish failed for job %s chunks %s+: %s", job_id, start, exc)
                return sent, True
            session.commit()
        sent += len(chunks)
        batches += 1
    return sent, False


def publish_pending(
    sessions: sessionmaker[Session],
    app: Celery,
    *,
    job_id: str | None = None,
    chunks_per_batch: int = CHUNKS_PER_BATCH,
    max_batches: int | None = None,
    fresh: tuple[str, int] | None = None,
) -> int:
    """Publish every unpublished queued chunk (of one job, or of all); how many were sent.

    ``max_batches`` bounds the work per job (a submission publishes one batch before it
    answers and leaves the rest to a background drain); ``fresh`` is (model, chunk count)
    of ``job_id`` when it has just been committed."""
    if job_id is not None:
        jobs = [job_id]
    else:
        with sessions() as session:  # oldest job first: a newer one waits behind it
            waiting = select(WorkItem.job_id).where(_unpublished())
            jobs = list(
                session.scalars(select(Job.id).where(Job.id.in_(waiting)).order_by(Job.created_at))
            )
    sent = 0
    for job in jobs:
        count, failed = _drain_job(sessions, app, job, chunks_per_batch, max_batches, fresh)
        sent += count
        if failed:
            break
    return sent
