"""Projects and their API keys (used by the gateway and the bootstrap CLI)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from charter import keys
from charter.db.models import ApiKey, Project, as_utc, utcnow
from charter.errors import Invalid


def ensure_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        project = Project(name=name)
        session.add(project)
        session.flush()
    return project


def issue_key(
    session: Session,
    project_id: str,
    scopes: list[str],
    pepper: str,
    *,
    name: str = "",
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """A new key row and the plaintext key, which is shown once and never stored."""
    unknown = sorted(set(scopes) - set(keys.SCOPES))
    if unknown or not scopes:
        raise Invalid(
            f"scopes must be a non-empty subset of {list(keys.SCOPES)}; got {scopes}",
            field="scopes",
        )
    plaintext, prefix = keys.generate()
    row = ApiKey(
        project_id=project_id,
        name=name,
        prefix=prefix,
        key_hash=keys.hash_key(plaintext, pepper),
        scopes=sorted(set(scopes)),
        expires_at=expires_at,
    )
    session.add(row)
    session.flush()
    return row, plaintext


def live_admin_keys(session: Session, project_id: str) -> list[ApiKey]:
    """The project's admin keys that are neither revoked nor expired, locked for update
    (on PostgreSQL) so that two concurrent revocations cannot both pass a last-key check."""
    query = select(ApiKey).where(ApiKey.project_id == project_id, ApiKey.revoked_at.is_(None))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    now = utcnow()
    return [
        k
        for k in session.scalars(query)
        if "admin" in k.scopes and (k.expires_at is None or as_utc(k.expires_at) > now)
    ]
