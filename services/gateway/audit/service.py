"""The audit log: one row per state-changing call, and the admins' view of it.

The unit of work (:mod:`services.gateway.unit_of_work`) builds the rows: a success's
row joins the request's own transaction, so it commits or rolls back with the writes
(a call that fails after writing leaves no ``succeeded`` row, and of two concurrent
calls with one ``Idempotency-Key`` only the one that committed keeps its row; the
other is recorded as a replay). A refusal or a failure is written after the rollback,
in a transaction of its own, best effort. Rows are never updated; the sweeper deletes
those older than ``audit_retention_days`` when it is set.

Calls that reach no key (no key, an unknown, revoked or expired one: 401) are not
attributable and are left to the access log, and so are 429s, which shed load that
writing a row each would put back on the database.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import psycopg
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from structlog.contextvars import get_contextvars

from charter.db.models import ApiKey, AuditEvent, utcnow
from charter.errors import CharterError
from services.gateway.errors import validation_response
from services.gateway.pagination import decode_int_cursor, encode_cursor

log = logging.getLogger(__name__)

Outcome = Literal["succeeded", "refused", "failed"]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_DETAIL_CHARS = 2000
_MAX_ID_BODY = 256 * 1024  # larger answers are lists or documents, not one created object


@dataclass(frozen=True)
class Caller:
    """The key a request authenticated with, copied out of its row: a rollback
    expires the row, and reading it again would be a query."""

    project_id: str
    api_key_id: str
    key_prefix: str

    @classmethod
    def of(cls, key: ApiKey) -> Caller:
        return cls(key.project_id, key.id, key.prefix)


@dataclass(frozen=True)
class Failure:
    status_code: int
    code: str
    detail: str


def audited(request: Request) -> Caller | None:
    """Who to record this request under, or None: a safe method, or no key reached."""
    if request.method in SAFE_METHODS:
        return None
    caller: Caller | None = getattr(request.state, "caller", None)
    return caller


def outcome_of(status_code: int) -> Outcome:
    if status_code < 400:
        return "succeeded"
    return "refused" if status_code < 500 else "failed"


def _created_id(response: Response) -> str | None:
    body = getattr(response, "body", None)  # a streamed answer has none
    if not body or len(body) > _MAX_ID_BODY or bytes(body[:1]) != b"{":
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    value = document.get("id") if isinstance(document, dict) else None
    return str(value) if isinstance(value, str | int) and not isinstance(value, bool) else None


def event(
    request: Request,
    route: str,
    caller: Caller,
    status_code: int,
    *,
    response: Response | None = None,
    failure: Failure | None = None,
    replayed: bool = False,
) -> AuditEvent:
    """The row for this request (no I/O: the caller adds it to a session)."""
    objects = {name: str(value) for name, value in request.path_params.items()}
    created = _created_id(response) if response is not None and status_code < 400 else None
    if created is not None:
        objects.setdefault("id", created)
    request_id = get_contextvars().get("request_id")  # bound by RequestIdMiddleware
    return AuditEvent(
        project_id=caller.project_id,
        api_key_id=caller.api_key_id,
        key_prefix=caller.key_prefix,
        method=request.method,
        route=route[:255],
        path=request.url.path[:2048],
        object_ids=objects,
        status_code=status_code,
        outcome=outcome_of(status_code),
        error_code=failure.code[:64] if failure else None,
        error_detail=failure.detail[:MAX_DETAIL_CHARS] if failure else None,
        request_id=request_id if isinstance(request_id, str) else None,
        idempotency_key=request.headers.get("idempotency-key")
        if request.method == "POST"
        else None,
        replayed=replayed,
        created_at=utcnow(),
    )


def failure_of_response(response: Response) -> Failure:
    """The error an endpoint answered (``{"error", "detail", ...}``)."""
    code, detail = "http_error", ""
    try:
        body = json.loads(getattr(response, "body", b"") or b"null")
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("error") or code)
        detail = str(body.get("detail") or "")
    return Failure(response.status_code, code, detail)


def failure_of(exc: BaseException) -> Failure:
    """How the gateway answers ``exc`` (:mod:`services.gateway.errors`), as a row says it."""
    if isinstance(exc, CharterError):
        return Failure(exc.status_code, exc.code, exc.detail)
    if isinstance(exc, RequestValidationError):
        return failure_of_response(validation_response(exc))
    if isinstance(exc, HTTPException):
        return Failure(exc.status_code, "http_error", str(exc.detail))
    if isinstance(exc, IntegrityError):
        return Failure(409, "conflict", "a concurrent request changed the same object; retry")
    if isinstance(exc, DataError | psycopg.DataError):
        return Failure(422, "invalid", "a value in the request cannot be stored")
    return Failure(500, "internal", type(exc).__name__)


def write_alone(session: Session, row: AuditEvent) -> None:
    """Commit ``row`` in a transaction of its own, after the request's rolled back.
    Best effort: a database that refuses it is logged and the answer stands."""
    try:
        session.add(row)
        session.commit()
    except (DBAPIError, PoolTimeout, psycopg.Error) as exc:
        log.warning(
            "could not write the audit event of %s %s (%s): %s",
            row.method,
            row.path,
            row.outcome,
            type(getattr(exc, "orig", None) or exc).__name__,
        )
        try:
            session.rollback()
        except (DBAPIError, psycopg.Error):
            log.debug("rollback after a failed audit write failed too", exc_info=True)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Filters:
    route: str | None = None
    key_prefix: str | None = None
    outcome: Outcome | None = None
    object_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def _has_object(session: Session, object_id: str) -> ColumnElement[bool]:
    """Whether any value of ``object_ids`` is ``object_id`` (JSON on either backend)."""
    if session.get_bind().dialect.name == "postgresql":
        values = func.jsonb_each_text(AuditEvent.object_ids).table_valued("key", "value")
    else:
        values = func.json_each(AuditEvent.object_ids).table_valued("key", "value")
    return exists(select(1).select_from(values).where(values.c.value == object_id))


def page(
    session: Session, project_id: str, filters: Filters, cursor: str | None, limit: int
) -> tuple[list[AuditEvent], str | None]:
    """The project's events that match every filter, newest first; the cursor is the
    last row's id (``since`` inclusive, ``until`` exclusive)."""
    before = decode_int_cursor(cursor, 2**63 - 1)
    query = select(AuditEvent).where(AuditEvent.project_id == project_id, AuditEvent.id < before)
    if filters.route is not None:
        query = query.where(AuditEvent.route == filters.route)
    if filters.key_prefix is not None:
        query = query.where(AuditEvent.key_prefix == filters.key_prefix)
    if filters.outcome is not None:
        query = query.where(AuditEvent.outcome == filters.outcome)
    if filters.since is not None:
        query = query.where(AuditEvent.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(AuditEvent.created_at < filters.until)
    if filters.object_id is not None:
        query = query.where(_has_object(session, filters.object_id))
    rows = list(session.scalars(query.order_by(AuditEvent.id.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor(rows[limit - 1].id)
