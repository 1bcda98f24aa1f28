"""Idempotency-Key records: the first response to a POST, replayed on retries.

A record belongs to the API key that made the request (so no other key, of any
scope, can read it), matches only the same request (method, path, query, content
type and body hash), and lives ``idempotency_ttl_seconds``; the sweeper deletes
expired records and a lookup ignores them. A response that carried a secret (a
new API key, a run's lease token) is stored with the secret redacted and is never
replayed: a retry learns that the request succeeded, not the secret.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from charter.db.models import IdempotencyRecord, as_utc, utcnow

REDACTED = "[redacted]"


def find(session: Session, api_key_id: str, key: str) -> IdempotencyRecord | None:
    """The live record of this key's ``Idempotency-Key``; an expired one is deleted."""
    record = session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key
        )
    )
    if record is not None and as_utc(record.expires_at) <= utcnow():
        session.delete(record)
        session.flush()
        return None
    return record


def redact(body: bytes, fields: tuple[str, ...]) -> str:
    """The JSON body with each top-level field of ``fields`` replaced by a marker."""
    document = json.loads(body)
    for name in fields:
        if name in document:
            document[name] = REDACTED
    return json.dumps(document)


def record(
    session: Session,
    *,
    project_id: str,
    api_key_id: str,
    key: str,
    request_hash: str,
    status_code: int,
    body: bytes,
    secret_fields: tuple[str, ...],
    ttl_seconds: float,
) -> IdempotencyRecord:
    now = utcnow()
    row = IdempotencyRecord(
        project_id=project_id,
        api_key_id=api_key_id,
        key=key,
        request_hash=request_hash,
        status_code=status_code,
        response_body=redact(body, secret_fields) if secret_fields else body.decode(),
        redacted=bool(secret_fields),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_seconds),
    )
    session.add(row)
    return row


def prune(session: Session, now: datetime | None = None) -> int:
    """Delete every expired record; returns how many. The caller commits."""
    result = session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= (now or utcnow()))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
