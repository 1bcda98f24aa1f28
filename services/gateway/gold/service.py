"""Gold sets: comparisons with a known answer, versioned and hashed.

A push stores the rows as a prompt batch (so evaluations are ordinary ``compare``
jobs on it) and the answers beside it; the same rows as the latest version answer that
version instead of making another. Rows are parsed strictly, line by line, and a bad
line anywhere stores nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from charter.core.constitution import canonical_json
from charter.core.documents import Bounds
from charter.db.models import GoldItem, GoldSet, Prompt
from charter.errors import CharterError, Invalid
from services.gateway import versioned
from services.gateway.batches import service as batches
from services.gateway.gold.schemas import MAX_ROWS, NAME_PATTERN, GoldRow
from services.gateway.jsonl import MAX_LINE_BYTES, parse_stream


def parse_jsonl(
    chunks: Iterable[bytes], *, bounds: Bounds = Bounds(), max_line_bytes: int = MAX_LINE_BYTES
) -> list[GoldRow]:
    return list(
        parse_stream(
            chunks,
            GoldRow.model_validate,
            MAX_ROWS,
            "gold set",
            bounds=bounds,
            max_line_bytes=max_line_bytes,
        )
    )


def content_hash(rows: Sequence[GoldRow]) -> str:
    """sha256 of the rows in order, as canonical JSON (unset fields as null)."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(canonical_json(row.model_dump(mode="json")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def push(
    session: Session, project_id: str, name: str, rows: Sequence[GoldRow]
) -> tuple[GoldSet, bool]:
    """A new version of ``name`` with ``rows``, or the latest when its rows are these."""
    digest = content_hash(rows)
    latest = versioned.latest(session, GoldSet, project_id, name)
    if latest is not None and latest.content_hash == digest:
        return latest, False
    batch = batches.create(
        session,
        project_id,
        f"gold:{name}",
        (
            (
                row.prompt,
                [m.model_dump() for m in row.messages] if row.messages else None,
                None,
                row.response_a,
                row.response_b,
            )
            for row in rows
        ),
    )
    categories: dict[str, int] = {}
    for row in rows:
        if row.category is not None:
            categories[row.category] = categories.get(row.category, 0) + 1
    gold = GoldSet(
        project_id=project_id,
        name=name,
        version=1 if latest is None else latest.version + 1,
        batch_id=batch.id,
        row_count=len(rows),
        content_hash=digest,
        categories=dict(sorted(categories.items())),
    )
    session.add(gold)
    session.flush()
    prompt_ids = session.scalars(
        select(Prompt.id).where(Prompt.batch_id == batch.id).order_by(Prompt.position)
    ).all()
    session.add_all(
        GoldItem(
            gold_set_id=gold.id,
            position=position,
            prompt_id=prompt_id,
            answer=row.answer,
            p_gold=row.p_gold,
            category=row.category,
        )
        for position, (prompt_id, row) in enumerate(zip(prompt_ids, rows, strict=True))
    )
    session.flush()
    return gold, True


def resolve(
    session: Session,
    project_id: str,
    ref: str,
    *,
    field: str = "gold_set",
    malformed: type[CharterError] = Invalid,
) -> GoldSet:
    """``name`` (latest version) or ``name@version`` of the project's gold sets."""
    return versioned.resolve(
        session, GoldSet, project_id, ref, name_pattern=NAME_PATTERN, what="gold set",
        field=field, malformed=malformed,
    )  # fmt: skip


def listing(session: Session, project_id: str) -> Sequence[GoldSet]:
    """Every version of every gold set of the project, by name then version."""
    query = select(GoldSet).where(GoldSet.project_id == project_id)
    return session.scalars(query.order_by(GoldSet.name, GoldSet.version)).all()


def items(
    session: Session, gold: GoldSet, offset: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """The rows of a gold set, in order, with their answers."""
    query = (
        select(GoldItem, Prompt)
        .join(Prompt, Prompt.id == GoldItem.prompt_id)
        .where(GoldItem.gold_set_id == gold.id, GoldItem.position >= offset)
        .order_by(GoldItem.position)
        .limit(limit)
    )
    return [
        {
            "position": item.position,
            "prompt": prompt.prompt,
            "messages": prompt.messages,
            "response_a": prompt.response_a or "",
            "response_b": prompt.response_b or "",
            "answer": item.answer,
            "p_gold": item.p_gold,
            "category": item.category,
        }
        for item, prompt in session.execute(query)
    ]
