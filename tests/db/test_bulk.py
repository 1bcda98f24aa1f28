"""``charter.db.bulk.bulk_insert`` on SQLite and PostgreSQL: rows stream in (COPY or
chunked inserts) within the caller's transaction; JSON columns, NULLs and reserved
column names survive; a row that fails part-way leaves nothing stored."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from charter.db import bulk
from charter.db.bulk import bulk_insert
from charter.db.models import (
    Dataset,
    DatasetRow,
    DatasetVersion,
    Project,
    Prompt,
    PromptBatch,
)

COLUMNS = ("batch_id", "position", "prompt", "messages", "response", "response_a", "response_b")


def _batch(session: Session) -> str:
    project = Project(name="alpha")
    session.add(project)
    session.flush()
    batch = PromptBatch(project_id=project.id, name="b", row_count=0)
    session.add(batch)
    session.flush()
    return batch.id


def _rows(batch_id: str, n: int) -> Iterator[tuple[Any, ...]]:
    for i in range(n):
        if i % 3 == 0:
            yield (batch_id, i, f"prompt {i}", None, None, None, None)
        elif i % 3 == 1:
            messages = [{"role": "user", "content": f"héllo {i} \U0001f600"}]
            yield (batch_id, i, None, messages, f"answer {i}", None, None)
        else:
            yield (batch_id, i, f"prompt {i}", None, None, "a", "b")


def _stored(session: Session, batch_id: str) -> list[tuple[Any, ...]]:
    query = select(*(getattr(Prompt, c) for c in COLUMNS)).where(Prompt.batch_id == batch_id)
    return [tuple(r) for r in session.execute(query.order_by(Prompt.position))]


def test_rows_are_stored_as_given(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        batch_id = _batch(session)
        assert bulk_insert(session, Prompt, COLUMNS, _rows(batch_id, 7), chunk_rows=3) == 7
    with Session(engine) as session:
        assert _stored(session, batch_id) == list(_rows(batch_id, 7))
        # a JSON column's NULL is SQL NULL, not JSON null
        nulls = select(func.count()).where(Prompt.batch_id == batch_id, Prompt.messages.is_(None))
        assert session.scalar(nulls) == 5


def test_no_rows_is_zero(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        batch_id = _batch(session)
        assert bulk_insert(session, Prompt, COLUMNS, iter(())) == 0
        assert _stored(session, batch_id) == []


def test_left_out_columns_get_their_default_and_reserved_names_are_quoted(
    engine: Engine,
) -> None:
    """dataset_rows has a column named ``row`` (reserved on PostgreSQL); label_id is
    left out and so NULL."""
    with Session(engine) as session, session.begin():
        project = Project(name="alpha")
        session.add(project)
        session.flush()
        dataset = Dataset(project_id=project.id, name="d", kind="sft")
        session.add(dataset)
        session.flush()
        version = DatasetVersion(dataset_id=dataset.id, version=1, filter={"upload": True})
        session.add(version)
        session.flush()
        rows = [(version.id, seq, {"prompt": f"p{seq}", "completion": "ç"}) for seq in range(4)]
        assert bulk_insert(session, DatasetRow, ("version_id", "seq", "row"), iter(rows)) == 4
        version_id = version.id
    with Session(engine) as session:
        stored = session.execute(
            select(DatasetRow.version_id, DatasetRow.seq, DatasetRow.row, DatasetRow.label_id)
            .where(DatasetRow.version_id == version_id)
            .order_by(DatasetRow.seq)
        ).all()
        assert [tuple(r) for r in stored] == [(*r, None) for r in rows]


def test_a_failing_row_part_way_stores_nothing(engine: Engine) -> None:
    """The rows may be a generator still reading a request body: when it raises after
    several chunks went out, the transaction rolls back and nothing is kept."""

    def rows(batch_id: str) -> Iterator[tuple[Any, ...]]:
        yield from _rows(batch_id, 10)
        raise ValueError("line 11: not JSON")

    with Session(engine) as session:
        with session.begin():
            batch_id = _batch(session)
        with pytest.raises(ValueError, match="line 11"), session.begin():
            bulk_insert(session, Prompt, COLUMNS, rows(batch_id), chunk_rows=3)
        assert _stored(session, batch_id) == []


def test_sqlite_inserts_each_chunk_as_it_fills(engine: Engine, backend: str) -> None:
    """Rows are not all held first: on SQLite each full chunk is inserted before the
    next rows are read (on PostgreSQL each row goes straight into the COPY)."""
    if backend != "sqlite":
        pytest.skip("chunks are SQLite's path")
    seen: list[int] = []
    with Session(engine) as session, session.begin():
        batch_id = _batch(session)

        def rows() -> Iterator[tuple[Any, ...]]:
            for i, row in enumerate(_rows(batch_id, 7)):
                if i % 3 == 0:  # the first row of a chunk: the previous chunks are stored
                    seen.append(len(_stored(session, batch_id)))
                yield row

        assert bulk_insert(session, Prompt, COLUMNS, rows(), chunk_rows=3) == 7
    assert seen == [0, 3, 6]


@pytest.mark.postgres_only
def test_postgres_copies_and_its_errors_are_psycopgs(engine: Engine) -> None:
    """One COPY takes every row; a value PostgreSQL refuses raises psycopg's DataError
    (which the gateway answers 422) and nothing is stored."""
    with Session(engine) as session:
        with session.begin():
            batch_id = _batch(session)
        copies: list[int] = []
        real = bulk._copy

        def spy(*args: Any) -> int:
            copies.append(n := real(*args))
            return n

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(bulk, "_copy", spy)
            with session.begin():
                bulk_insert(session, Prompt, COLUMNS, _rows(batch_id, 5))
        assert copies == [5]
        bad = [(batch_id, 5, "fine", None, None, None, None), (batch_id, 6, "a\x00b", *[None] * 3)]
        with pytest.raises(psycopg.DataError), session.begin():
            bulk_insert(session, Prompt, COLUMNS, iter(bad))
        assert len(_stored(session, batch_id)) == 5


def test_unknown_columns_are_refused(engine: Engine) -> None:
    with Session(engine) as session, pytest.raises(ValueError, match="prompts has no column"):
        bulk_insert(session, Prompt, ("batch_id", "colour"), iter(()))
