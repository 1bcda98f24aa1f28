"""Streaming bulk inserts: one COPY on PostgreSQL, chunked multi-row inserts on SQLite.

Rows are taken one at a time as they come (they may be a generator still reading a
request body) and written within the session's transaction, so memory stays flat and
a row that raises part-way (a parse error, a value the database refuses) leaves
nothing stored once the caller rolls back. psycopg's errors from COPY are its own
(``psycopg.DataError``, ...), not SQLAlchemy's: callers that map database errors
must handle both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any, cast

from psycopg import sql
from sqlalchemy import JSON, Table, insert
from sqlalchemy.orm import DeclarativeBase, Session

CHUNK_ROWS = 5_000
"""Rows per ``executemany`` on SQLite: large enough to amortise the statement, small
enough that a chunk's dicts stay a few MiB."""

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def bulk_insert(
    session: Session,
    model: type[DeclarativeBase],
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> int:
    """Insert ``rows`` (each a sequence of values in ``columns`` order) into
    ``model``'s table; returns how many were inserted. Columns left out get their
    database default (NULL unless the table says otherwise)."""
    table = cast(Table, model.__table__)
    unknown = [c for c in columns if c not in table.c]
    if unknown:
        raise ValueError(f"{table.name} has no column {', '.join(unknown)}")
    if session.get_bind().dialect.name == "postgresql":
        return _copy(session, table, columns, rows)
    return _insert(session, table, columns, rows, chunk_rows)


def _copy(
    session: Session, table: Table, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    # The raw connection is the one the session's transaction runs on.
    raw = session.connection().connection.driver_connection
    assert raw is not None
    target = sql.Identifier(*((table.schema,) if table.schema else ()), table.name)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        target, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    # COPY's text format takes a JSON column's value as its JSON text.
    json_at = tuple(i for i, c in enumerate(columns) if isinstance(table.c[c].type, JSON))
    count = 0
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        write = copy.write_row
        for row in rows:
            for i in json_at:
                if row[i] is not None:
                    row = (*row[:i], _dumps(row[i]), *row[i + 1 :])
            write(row)
            count += 1
    return count


def _insert(
    session: Session,
    table: Table,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    chunk_rows: int,
) -> int:
    # render_nulls keeps every row's column set identical (a NULL is sent as NULL, not
    # left out), so each chunk goes out in one executemany, not one statement per row.
    statement = insert(table).execution_options(render_nulls=True)
    records = (dict(zip(columns, row, strict=True)) for row in rows)
    count = 0
    while chunk := list(islice(records, chunk_rows)):
        session.execute(statement, chunk)
        count += len(chunk)
    return count
