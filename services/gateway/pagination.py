"""Opaque cursors over a monotonically ordered key."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import and_, or_

from charter.errors import Invalid

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Any:
    if cursor is None:
        return None
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid("cursor is not one this API issued", field="cursor") from exc


def decode_int_cursor(cursor: str | None, default: int) -> int:
    """A position or row-id cursor; anything else was not issued by this API."""
    after = decode_cursor(cursor)
    if after is None:
        return default
    if type(after) is not int or not 0 <= after < 2**63:
        raise Invalid("cursor is not one this API issued", field="cursor")
    return after


def keyset(
    session: Any, query: Any, created_col: Any, id_col: Any, cursor: str | None, limit: int
) -> tuple[list[Any], str | None]:
    """Newest first by (created_at, id); the cursor is the last row's key."""
    after = decode_cursor(cursor)
    if after is not None:
        if not (
            isinstance(after, list) and len(after) == 2 and all(isinstance(v, str) for v in after)
        ):
            raise Invalid("cursor is not one this API issued", field="cursor")
        try:
            created = datetime.fromisoformat(after[0])
        except ValueError as exc:
            raise Invalid("cursor is not one this API issued", field="cursor") from exc
        query = query.where(
            or_(created_col < created, and_(created_col == created, id_col < after[1]))
        )
    rows = list(session.scalars(query.order_by(created_col.desc(), id_col.desc()).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor([last.created_at.isoformat(), last.id])


def id_page(
    session: Any, query: Any, id_col: Any, cursor: str | None, limit: int
) -> tuple[list[Any], str | None]:
    """Oldest first by an increasing integer id; the cursor is the last row's id."""
    after = decode_int_cursor(cursor, 0)
    rows = list(session.scalars(query.where(id_col > after).order_by(id_col).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor(rows[limit - 1].id)
