"""Resolve the caller's API key. Every query is then scoped to its project."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from starlette.datastructures import Address, Headers, QueryParams

from charter import keys
from charter.db.models import ApiKey, as_utc, utcnow
from charter.errors import Unauthorized
from services.gateway.ratelimit import RateLimiter, address_of

log = logging.getLogger(__name__)
_TOUCH_EVERY = timedelta(seconds=60)


def _presented_key(headers: Headers, query: QueryParams) -> str:
    if "api_key" in query or "key" in query:
        raise Unauthorized(
            "API keys are not accepted in the query string; use the X-API-Key header"
        )
    key = headers.get("x-api-key")
    if key is None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else None
    if not key:
        raise Unauthorized("missing API key: send it in the X-API-Key header")
    return key


def _lookup(session: Session, key: str, pepper: str) -> ApiKey:
    prefix = keys.prefix_of(key)
    row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix)) if prefix else None
    if row is None or not keys.matches(key, row.key_hash, pepper):
        raise Unauthorized("invalid API key")
    if row.revoked_at is not None:
        raise Unauthorized("this API key was revoked")
    if row.expires_at is not None and as_utc(row.expires_at) <= utcnow():
        raise Unauthorized("this API key has expired")
    return row


def authenticate(
    session: Session,
    headers: Headers,
    query: QueryParams,
    pepper: str,
    *,
    limiter: RateLimiter,
    client: Address | None,
) -> ApiKey:
    """The caller's key. An address with too many failed keys is refused (429) before
    its key is even looked up, so guessing keys is no faster than the limit."""
    address = address_of(client)
    limiter.blocked(address)
    key = _presented_key(headers, query)  # no key at all is not a guess: not counted
    try:
        row = _lookup(session, key, pepper)
    except Unauthorized:
        limiter.failed(address)
        raise
    now = utcnow()
    if row.last_used_at is None or now - as_utc(row.last_used_at) > _TOUCH_EVERY:
        _touch(session, row, now)
    return row


def _touch(session: Session, row: ApiKey, now: datetime) -> None:
    """Record the key's use, best effort: in a savepoint, so a database that refuses
    writes (read-only, disk full) still serves reads; only writes then answer 503.

    The row stays locked until the request ends, so concurrent requests with the same
    key skip a row another one is touching (SKIP LOCKED) instead of queueing behind it:
    otherwise a long upload would hold up every other request of its key. The lock is
    ``FOR NO KEY UPDATE`` (only ``last_used_at`` changes), which the foreign-key checks
    of the request's own inserts (``KEY SHARE`` on this row: idempotency records, audit
    events) do not wait for; with ``FOR UPDATE`` concurrent first uses of a key could
    deadlock on them."""
    target = select(ApiKey.id).where(ApiKey.id == row.id)
    if session.get_bind().dialect.name == "postgresql":
        target = target.with_for_update(skip_locked=True, key_share=True)
    try:
        with session.begin_nested():
            session.execute(
                update(ApiKey)
                .where(ApiKey.id.in_(target.scalar_subquery()))
                .values(last_used_at=now)
                .execution_options(synchronize_session=False)
            )
    except DBAPIError as exc:
        log.warning("could not record the use of key %s: %s", row.id, type(exc.orig).__name__)
