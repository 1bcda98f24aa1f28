"""Claiming work items under a lease, and the fenced write of their results.

The lease is (owner, expiry, attempt). Claiming bumps ``attempt``; every later
write names the attempt it holds, so a worker whose lease was taken over (it
stalled, the sweeper re-queued its items, another worker claimed them) writes
nothing. ``labels.work_item_id`` is unique, so even a bug here could not store
two labels for one item.

Every lease decision (is it expired? until when is it held?) reads the
database's clock, never the worker's: a worker whose clock runs an hour ahead
would otherwise take over live leases and hold its own an hour too long, one
an hour behind would write leases that are expired before they start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, DateTime, Select, and_, func, or_, select, tuple_, update
from sqlalchemy.orm import Session

from charter import webhook_events
from charter.core.jobs import (
    ACTIVE_STATES,
    FINAL_JOB_STATUSES,
    LABELLED_STATES,
    ItemState,
    JobStatus,
)
from charter.db.models import Job, WorkItem, utcnow


@dataclass(frozen=True)
class Claimed:
    item_id: int
    prompt_id: int
    attempt: int


def _skip_locked(session: Session, query: Select[Any]) -> Select[Any]:
    # PostgreSQL: concurrent claimers skip each other's rows. SQLite needs nothing:
    # every transaction there begins IMMEDIATE, so writers are serialised.
    if session.get_bind().dialect.name == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def db_now(session: Session) -> ColumnElement[datetime] | datetime:
    """The database's clock, for every lease decision.

    PostgreSQL: ``statement_timestamp()``, the clock of the server's host. Not
    ``now()``, the start of the transaction, early by however long it waited on a
    lock; not ``clock_timestamp()``, which is volatile, so the sweeper's comparison
    could not use the (status, lease_expires_at) index. SQLite is embedded: its
    clock is this process's, the same clock ``utcnow()`` reads, bound as a value so
    stored times keep the one format SQLAlchemy writes and reads.
    """
    if session.get_bind().dialect.name == "postgresql":
        return func.statement_timestamp(type_=DateTime(timezone=True))
    return utcnow()


def _claimable(job_id: str, chunk: int, now):  # type: ignore[no-untyped-def]
    return select(WorkItem).where(
        WorkItem.job_id == job_id,
        WorkItem.chunk == chunk,
        or_(
            WorkItem.status == ItemState.QUEUED,
            and_(WorkItem.status == ItemState.RUNNING, WorkItem.lease_expires_at < now),
        ),
    )


def claim(
    session: Session,
    job_id: str,
    chunk: int,
    owner: str,
    *,
    lease_seconds: float,
    max_attempts: int,
    exclude: set[int] = frozenset(),  # type: ignore[assignment]
) -> list[Claimed]:
    """Lease the claimable items of a chunk (call inside a transaction).

    Items already tried ``max_attempts`` times are failed instead. When any item
    was tried before, only one item is claimed: a chunk that crashed its worker
    is then retried item by item, so one poison item cannot fail its neighbours.
    The rows are locked by the select, then leased by one UPDATE for the chunk.
    """
    now = db_now(session)
    query = (
        _claimable(job_id, chunk, now)
        .with_only_columns(WorkItem.id, WorkItem.prompt_id, WorkItem.attempt, WorkItem.last_error)
        .order_by(WorkItem.id)
    )
    rows = [r for r in session.execute(_skip_locked(session, query)) if r.id not in exclude]
    live = []
    for row in rows:
        if row.attempt >= max_attempts:
            session.execute(
                update(WorkItem)
                .where(WorkItem.id == row.id)
                .values(
                    status=ItemState.FAILED,
                    last_error=f"gave up after {row.attempt} attempts; "
                    f"last error: {row.last_error or 'worker lost'}",
                    lease_owner=None,
                    lease_expires_at=None,
                )
            )
        else:
            live.append(row)
    if any(row.attempt > 0 for row in live):
        live = [min(live, key=lambda r: (r.attempt == 0, r.id))]
    if live:
        session.execute(
            update(WorkItem)
            .where(WorkItem.id.in_([r.id for r in live]))
            .values(
                status=ItemState.RUNNING,
                attempt=WorkItem.attempt + 1,
                lease_owner=owner,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            )
        )
    return [Claimed(r.id, r.prompt_id, r.attempt + 1) for r in live]


def claimable_count(
    session: Session,
    job_id: str,
    chunk: int,
    exclude: set[int] = frozenset(),  # type: ignore[assignment]
) -> int:
    """How many items of a chunk are claimable, row locks or not (takes no lock).

    After :func:`claim` returned nothing, a positive count means the rows exist but
    another transaction held them (PostgreSQL skips locked rows): a publisher's
    ``published_at`` mark, the sweeper re-queueing them, or another claimer.
    """
    query = _claimable(job_id, chunk, db_now(session)).with_only_columns(WorkItem.id)
    return sum(1 for item_id in session.scalars(query) if item_id not in exclude)


def _held(claimed: list[Claimed], owner: str):  # type: ignore[no-untyped-def]
    """The one fence every write after a claim goes through: same attempt, same owner."""
    return and_(
        tuple_(WorkItem.id, WorkItem.attempt).in_([(c.item_id, c.attempt) for c in claimed]),
        WorkItem.lease_owner == owner,
        WorkItem.status == ItemState.RUNNING,
    )


def extend(session: Session, claimed: list[Claimed], owner: str, lease_seconds: float) -> int:
    """Push the lease forward while a long batch runs; returns how many are still held."""
    expiry = db_now(session) + timedelta(seconds=lease_seconds)
    result = session.execute(
        update(WorkItem).where(_held(claimed, owner)).values(lease_expires_at=expiry)
    )
    return result.rowcount


def finish_many(
    session: Session, claimed: list[Claimed], owner: str, status: str, error: str | None
) -> set[int]:
    """Fenced, one statement for many items: the ids whose attempt still held the lease
    and are now final (the others were taken over and are left alone)."""
    if not claimed:
        return set()
    result = session.scalars(
        update(WorkItem)
        .where(_held(claimed, owner))
        .values(
            status=status,
            last_error=error,
            lease_owner=None,
            lease_expires_at=None,
            updated_at=db_now(session),
        )
        .returning(WorkItem.id)
    )
    return set(result)


def finish(session: Session, claimed: Claimed, owner: str, status: str, error: str | None) -> bool:
    """Fenced: True only if this attempt still held the lease and the item is now final."""
    return bool(finish_many(session, [claimed], owner, status, error))


def release(session: Session, claimed: Claimed, owner: str, error: str, max_attempts: int) -> bool:
    """Give an item back after an error: queued for another try, or failed at the limit."""
    final = claimed.attempt >= max_attempts
    result = session.execute(
        update(WorkItem)
        .where(_held([claimed], owner))
        .values(
            status=ItemState.FAILED if final else ItemState.QUEUED,
            last_error=(
                f"gave up after {claimed.attempt} attempts; last error: {error}" if final else error
            ),
            lease_owner=None,
            lease_expires_at=None,
            published_at=None,
            updated_at=db_now(session),
        )
    )
    return result.rowcount == 1


def complete_if_done(session: Session, job_id: str) -> bool:
    """Mark the job completed once no item is queued or running.

    Asks whether one active item exists instead of counting them (a count read every
    row of a 1M-item job after every chunk), walking the (job_id, chunk) index from the
    last chunk down: chunks are published and run in ascending order, so while a job
    runs its last chunks are still queued and the first row read answers; only the
    last few chunks to finish read further.
    """
    active = session.scalar(
        select(WorkItem.id)
        .where(WorkItem.job_id == job_id, WorkItem.status.in_(ACTIVE_STATES))
        .order_by(WorkItem.chunk.desc())
        .limit(1)
    )
    if active is not None:
        return False
    now = db_now(session)
    moved = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.not_in(FINAL_JOB_STATUSES))
        .values(status=JobStatus.COMPLETED, finished_at=now, updated_at=now)
        .execution_options(synchronize_session="fetch")
    ).rowcount
    if moved:  # only the transaction that completed it emits the event
        webhook_events.job_finished(session, job_id)
    return True


def expire_leases(session: Session, max_attempts: int) -> tuple[int, list[str]]:
    """Sweeper: items whose lease ran out go back to the queue (or fail at the limit)."""
    query = (
        select(WorkItem)
        .where(WorkItem.status == ItemState.RUNNING, WorkItem.lease_expires_at < db_now(session))
        .order_by(WorkItem.id)
        .limit(10_000)
    )
    stale = list(session.scalars(_skip_locked(session, query)))
    for row in stale:
        reason = f"lease of {row.lease_owner} expired (worker lost or stalled)"
        if row.attempt >= max_attempts:
            row.status = ItemState.FAILED
            row.last_error = f"gave up after {row.attempt} attempts; last error: {reason}"
        else:
            row.status = ItemState.QUEUED
            row.last_error = reason
            row.published_at = None
        row.lease_owner = row.lease_expires_at = None
    session.flush()
    return len(stale), sorted({row.job_id for row in stale})


def holders(session: Session, job_id: str, chunk: int) -> dict[str, int]:
    """Who holds a chunk's live leases, and on how many items: for the log line of a
    delivery that found nothing to claim because another worker is running it."""
    rows = session.execute(
        select(WorkItem.lease_owner, func.count())
        .where(
            WorkItem.job_id == job_id,
            WorkItem.chunk == chunk,
            WorkItem.status == ItemState.RUNNING,
            WorkItem.lease_expires_at >= db_now(session),
        )
        .group_by(WorkItem.lease_owner)
    )
    return {str(owner): count for owner, count in rows}


def give_back(
    session: Session, owner: str, reason: str, chunk: tuple[str, int] | None = None
) -> tuple[int, set[str]]:
    """At its shutdown, give back everything ``owner`` holds: queued again at once,
    unpublished (to be sent again), and the interrupted attempt not counted, since the
    item did not fail, its process was asked to stop. ``chunk`` (job id, chunk) names
    the delivery being abandoned: its queued items are unpublished too, so they are
    sent again even when the claim never committed (the message is acknowledged).
    Returns how many items were released and the jobs to publish again.

    Matched by owner alone, so only for an owner that runs nothing any more: the
    caller's own process on its way out, or a pool process its parent killed.
    """
    released = list(
        session.scalars(
            update(WorkItem)
            .where(WorkItem.lease_owner == owner, WorkItem.status == ItemState.RUNNING)
            .values(
                status=ItemState.QUEUED,
                attempt=WorkItem.attempt - 1,
                last_error=reason,
                lease_owner=None,
                lease_expires_at=None,
                published_at=None,
                updated_at=db_now(session),
            )
            .returning(WorkItem.job_id)
        )
    )
    jobs = set(released)
    if chunk is not None:
        session.execute(
            update(WorkItem)
            .where(
                WorkItem.job_id == chunk[0],
                WorkItem.chunk == chunk[1],
                WorkItem.status == ItemState.QUEUED,
            )
            .values(published_at=None)
        )
        jobs.add(chunk[0])
    return len(released), jobs


def held_by(session: Session, job_id: str, chunk: int, owner: str) -> list[Claimed]:
    """The chunk's items ``owner`` holds: after its claim's COMMIT failed with the
    connection, whether that claim went through all the same (call inside a transaction;
    the rows are locked like a claim's)."""
    query = (
        select(WorkItem.id, WorkItem.prompt_id, WorkItem.attempt)
        .where(
            WorkItem.job_id == job_id,
            WorkItem.chunk == chunk,
            WorkItem.status == ItemState.RUNNING,
            WorkItem.lease_owner == owner,
        )
        .order_by(WorkItem.id)
    )
    return [Claimed(r.id, r.prompt_id, r.attempt) for r in session.execute(query.with_for_update())]


def finished(session: Session, claimed: list[Claimed]) -> dict[int, str]:
    """Which of these attempts are already final (done or abstained), by item id: after a
    write's COMMIT failed with the connection, whether it went through all the same.
    Only the holder of an attempt ends it done or abstained, so these are its own."""
    if not claimed:
        return {}
    rows = session.execute(
        select(WorkItem.id, WorkItem.status).where(
            tuple_(WorkItem.id, WorkItem.attempt).in_([(c.item_id, c.attempt) for c in claimed]),
            WorkItem.status.in_(LABELLED_STATES),
        )
    )
    return {r.id: r.status for r in rows}
