"""Opaque cursors over a monotonically ordered key.

Each domain's service pages its own queries with :func:`keyset` or :func:`id_page`
and returns ``(rows, next_cursor)``; endpoints only turn the rows into a :class:`Page`.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import and_, or_, select

from charter.core.documents import Bounds, load_json
from charter.errors import Invalid

T = TypeVar("T")
M = TypeVar("M")

MAX_CURSOR_CHARS = 512  # an issued cursor is ~100: a timestamp and an id, or one integer
_BOUNDS = Bounds(max_depth=4, max_string_chars=256)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


def encode_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> Any:
    """The value inside a cursor; anything this API could not have issued is a 422.

    Cursors are short (a key or two) and parsed strictly with tight bounds, so a
    crafted one (megabytes long, deeply nested, a 5,000-digit number) costs nothing.
    """
    if cursor is None:
        return None
    if len(cursor) > MAX_CURSOR_CHARS:
        raise Invalid(
            f"cursor is longer than {MAX_CURSOR_CHARS} characters: not one this API issued",
            field="cursor",
        )
    try:
        return load_json(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), _BOUNDS)
    except (ValueError, UnicodeError) as exc:  # binascii.Error and DocumentError included
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


def project_page(
    session: Any, model: type[M], project_id: str, cursor: str | None, limit: int
) -> tuple[list[M], str | None]:
    """A project's rows of ``model`` (a table with ``project_id``, ``created_at`` and
    ``id``), newest first: :func:`keyset`."""
    table: Any = model
    query = select(model).where(table.project_id == project_id)
    return keyset(session, query, table.created_at, table.id, cursor, limit)


def id_page(
    session: Any,
    query: Any,
    id_col: Any,
    cursor: str | None,
    limit: int,
    *,
    before_first: int = 0,
) -> tuple[list[Any], str | None]:
    """Oldest first by an increasing integer key (an id, or a position when
    ``before_first`` is -1: positions start at 0); the cursor is the last row's key."""
    after = decode_int_cursor(cursor, before_first)
    rows = list(session.scalars(query.where(id_col > after).order_by(id_col).limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], encode_cursor(getattr(rows[limit - 1], id_col.key))
