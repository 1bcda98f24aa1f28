"""A project's API keys: issuing (the secret is returned once), listing, revoking.

Hashing and the key format are :mod:`charter.keys`; creating key rows and finding the
live admin keys are :mod:`charter.key_issuing`, shared with the bootstrap CLI.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from charter.db.models import ApiKey, utcnow
from charter.errors import Conflict, NotFound
from charter.key_issuing import issue_key, live_admin_keys
from services.gateway.keys.schemas import KeyCreate


def issue(session: Session, project_id: str, spec: KeyCreate, pepper: str) -> tuple[ApiKey, str]:
    """The new key's row and its plaintext, which is never stored."""
    expires = utcnow() + timedelta(days=spec.expires_in_days) if spec.expires_in_days else None
    return issue_key(
        session,
        project_id,
        list(spec.scopes),
        pepper,
        name=spec.name,
        expires_at=expires,
    )


def listing(session: Session, project_id: str) -> list[ApiKey]:
    """Every key of the project, revoked and expired ones too, oldest first."""
    query = select(ApiKey).where(ApiKey.project_id == project_id).order_by(ApiKey.created_at)
    return list(session.scalars(query))


def revoke(session: Session, project_id: str, key_id: str) -> ApiKey:
    """Revoke the key (again is a no-op), unless it is the project's last usable admin key."""
    row = session.get(ApiKey, key_id)
    if row is None or row.project_id != project_id:
        raise NotFound(f"API key {key_id!r} not found", field="key_id")
    if row.revoked_at is None and [k.id for k in live_admin_keys(session, project_id)] == [row.id]:
        raise Conflict(
            "this is the project's last usable admin key; create another admin key first",
            field="key_id",
        )
    row.revoked_at = row.revoked_at or utcnow()
    session.flush()
    return row
