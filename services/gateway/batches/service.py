"""Prompt batches. Large uploads take the bulk path: COPY on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from charter.core.documents import Bounds
from charter.db.models import Prompt, PromptBatch
from charter.errors import NotFound
from services.gateway.batches.schemas import PromptRow
from services.gateway.jsonl import MAX_LINE_BYTES, parse_lines

INSERT_CHUNK = 5_000
_COLUMNS = ("batch_id", "position", "prompt", "messages", "response", "response_a", "response_b")


PromptRecord = tuple[str | None, list[dict[str, str]] | None, str | None, str | None, str | None]
"""A validated row as stored: (prompt, messages, response, response_a, response_b).

Uploads hold every row in memory until all have been validated; as tuples of
strings (which the garbage collector stops tracking) a million rows take a
fraction of the memory of models, and do not trigger the full collections that
pause every thread of the gateway, its event loop included.
"""


def record(row: PromptRow) -> PromptRecord:
    messages = [m.model_dump() for m in row.messages] if row.messages else None
    return (row.prompt, messages, row.response, row.response_a, row.response_b)


def _parse_line(value: Any) -> PromptRecord:
    return record(PromptRow.model_validate(value))


def parse_jsonl(
    body: bytes,
    max_rows: int,
    *,
    bounds: Bounds = Bounds(),
    max_line_bytes: int = MAX_LINE_BYTES,
) -> list[PromptRecord]:
    """Parse (strictly) and validate every line; errors name the line and the field."""
    return parse_lines(
        body, _parse_line, max_rows, "batch", bounds=bounds, max_line_bytes=max_line_bytes
    )


def _records(batch_id: str, rows: Iterable[PromptRecord]) -> Iterator[dict[str, Any]]:
    for position, (prompt, messages, response, response_a, response_b) in enumerate(rows):
        yield {
            "batch_id": batch_id,
            "position": position,
            "prompt": prompt,
            "messages": messages,
            "response": response,
            "response_a": response_a,
            "response_b": response_b,
        }


def _copy_postgres(session: Session, records: Iterable[dict[str, Any]]) -> None:
    raw = session.connection().connection.driver_connection
    assert raw is not None
    with (
        raw.cursor() as cursor,
        cursor.copy(f"COPY prompts ({', '.join(_COLUMNS)}) FROM STDIN") as copy,
    ):
        for record in records:
            if record["messages"] is not None:
                record["messages"] = json.dumps(record["messages"])
            copy.write_row([record[c] for c in _COLUMNS])


def create(session: Session, project_id: str, name: str, rows: list[PromptRecord]) -> PromptBatch:
    batch = PromptBatch(project_id=project_id, name=name, row_count=len(rows))
    session.add(batch)
    session.flush()
    records = _records(batch.id, rows)
    if session.get_bind().dialect.name == "postgresql":
        _copy_postgres(session, records)
    else:
        # render_nulls keeps every row's column set identical (absent responses are
        # NULL either way), so the rows go out in one executemany, not one per row.
        bulk = insert(Prompt).execution_options(render_nulls=True)
        while chunk := list(islice(records, INSERT_CHUNK)):
            session.execute(bulk, chunk)
    return batch


def get(
    session: Session, project_id: str, batch_id: str, *, field: str = "batch_id"
) -> PromptBatch:
    batch = session.get(PromptBatch, batch_id)
    if batch is None or batch.project_id != project_id:
        raise NotFound(f"prompt batch {batch_id!r} not found", field=field)
    return batch


def prompts_page(session: Session, batch_id: str, after: int, limit: int) -> list[Prompt]:
    return list(
        session.scalars(
            select(Prompt)
            .where(Prompt.batch_id == batch_id, Prompt.position > after)
            .order_by(Prompt.position)
            .limit(limit)
        )
    )
