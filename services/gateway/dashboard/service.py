"""Dashboard sessions: a read key exchanged for a cookie, and the queries behind it.

The cookie holds a random token; the table holds only its sha256, so a leaked table
opens no session. Every request re-reads the session and its key: an expired
session, or a key that was revoked or expired since, is refused.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from charter.core.jobs import JobType
from charter.db.models import ApiKey, DashboardSession, Job, RunMetric, as_utc, utcnow
from charter.errors import Unauthorized
from services.gateway.pagination import keyset

_TOUCH_EVERY = timedelta(seconds=60)
EXPIRED = "your dashboard session has expired or was ended: log in again"


@dataclass(frozen=True)
class Login:
    token: str
    """The cookie's value: shown once, never stored."""
    row: DashboardSession


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(session: Session, key: ApiKey, hours: float) -> Login:
    """A new session for ``key`` (already authenticated), lasting ``hours``."""
    now = utcnow()
    # Expired sessions are cleared here, where sessions are made, rather than by a sweeper.
    session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    row = DashboardSession(
        id=digest(token),
        api_key_id=key.id,
        project_id=key.project_id,
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        expires_at=now + timedelta(hours=hours),
        last_seen=now,
    )
    session.add(row)
    session.flush()
    return Login(token, row)


def resolve(session: Session, token: str | None) -> tuple[DashboardSession, ApiKey]:
    """The live session the cookie names and its key; else 401 (and the dead row goes)."""
    if not token or len(token) > 128:
        raise Unauthorized("log in to the dashboard with an API key")
    row = session.get(DashboardSession, digest(token))
    if row is None:
        raise Unauthorized(EXPIRED)
    key = session.get_one(ApiKey, row.api_key_id)
    now = utcnow()
    ended = (
        as_utc(row.expires_at) <= now
        or key.revoked_at is not None
        or (key.expires_at is not None and as_utc(key.expires_at) <= now)
    )
    if ended:  # refused; the row itself is cleared by the next login (:func:`create`)
        raise Unauthorized(EXPIRED)
    if now - as_utc(row.last_seen) > _TOUCH_EVERY:
        row.last_seen = now
    return row, key


def end(session: Session, token: str | None) -> None:
    if token and len(token) <= 128:
        session.execute(delete(DashboardSession).where(DashboardSession.id == digest(token)))


def all_metrics(session: Session, run_id: str, limit: int) -> list[RunMetric]:
    """A run's metric points in report order, at most the last ``limit``."""
    rows = session.scalars(
        select(RunMetric)
        .where(RunMetric.run_id == run_id)
        .order_by(RunMetric.id.desc())
        .limit(limit)
    ).all()
    return list(reversed(rows))


def jobs_page(
    session: Session,
    project_id: str,
    job_type: JobType | None,
    model: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Job], str | None]:
    """The project's jobs, newest first, of one type and model if given."""
    query = select(Job).where(Job.project_id == project_id)
    if job_type is not None:
        query = query.where(Job.type == job_type)
    if model is not None:
        query = query.where(Job.model == model)
    return keyset(session, query, Job.created_at, Job.id, cursor, limit)


def job_models(session: Session, project_id: str) -> list[str]:
    """Models the project's jobs used (the jobs filter offers them)."""
    return list(
        session.scalars(
            select(Job.model).where(Job.project_id == project_id).distinct().order_by(Job.model)
        )
    )
