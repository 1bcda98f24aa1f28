"""Dataset rows -> JSONL, streamed in constant memory (Parquet: :mod:`.parquet`).

A version's rows are ``dataset_rows`` ``0 .. row_count - 1`` (``seq``), each a
label (rendered with ``sft_row``/``preference_row``) or a user-supplied row.
Readers page through them by ``seq`` in chunks of :data:`CHUNK_ROWS`; an export
holds one autocommit connection on PostgreSQL (one statement and snapshot per
chunk) and a short session per chunk on SQLite (the request's session is closed
before the body streams), so neither the rows nor a transaction are held while
the client reads.

JSONL lines are ``jsonl_line(sft_row(label))`` (or ``preference_row``). On
PostgreSQL the label's JSON columns are not decoded and re-encoded in Python:
the server hands them over as ``jsonb`` text (exactly Python's ``json.dumps`` of
the value, ``", "`` and ``": "`` included) and the long texts already quoted by
``to_json`` (whose escaping is exactly ``json.dumps(..., ensure_ascii=False)``);
the short, repeating provenance strings are quoted here, once per chunk. The
pieces are set into a line template made by rendering ``sft_row`` or
``preference_row`` once with placeholders. The result is byte-identical to the
plain path (the tests check it on every row), at a fraction of the cost.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import islice
from typing import Any

from sqlalchemy import Select, Text, bindparam, cast, func, select
from sqlalchemy.orm import Session

from charter.core.export import (
    jsonl_line,
    preference_row,
    sft_row,
    user_row,
)
from charter.db.models import DatasetRow, Label

CHUNK_ROWS = 5000
"""Rows read (and sent) per step."""
ROW_GROUP_ROWS = CHUNK_ROWS
"""Rows per Parquet row group (:mod:`.parquet`); each group is sent as soon as it is written.
A group is the export's working memory: one fetched chunk, so no chunk waits for another."""

_PROVENANCE = (
    Label.id,
    Label.job_id,
    Label.constitution_ref,
    Label.principle_ids,
    Label.model,
    Label.model_revision,
    Label.template_hash,
)
_LABEL_COLUMNS = {
    "sft": (Label.conversation, Label.completion, *_PROVENANCE),
    "preference": (
        Label.conversation,
        Label.response_a,
        Label.response_b,
        Label.p_a,
        Label.swap_disagreement,
        *_PROVENANCE,
    ),
    "classifier": (),  # every row is a stored row (no label behind it)
}
_RENDER: dict[str, Callable[..., dict[str, Any] | None]] = {
    "sft": sft_row,
    "preference": preference_row,
    "classifier": lambda label: None,
}


def _rows_query(*label_columns: Any) -> Select[Any]:
    """A version's rows with seq in [lo, hi), each with ``label_columns`` of its label
    (NULL for a mixed-in upload row), in order."""
    return (
        select(DatasetRow.row, *label_columns)
        .select_from(DatasetRow)
        .outerjoin(Label, Label.id == DatasetRow.label_id)
        .where(
            DatasetRow.version_id == bindparam("version_id"),
            DatasetRow.seq >= bindparam("lo"),
            DatasetRow.seq < bindparam("hi"),
        )
        .order_by(DatasetRow.seq)
    )


def _query(kind: str) -> Select[Any]:
    return _rows_query(*_LABEL_COLUMNS[kind])


_QUERIES = {kind: _query(kind) for kind in _LABEL_COLUMNS}
ROW_KEYS = {kind: tuple(c.key for c in cols) for kind, cols in _LABEL_COLUMNS.items()}
"""The label columns :func:`fetch_tuples` returns after the user row, per kind."""


_SQL: dict[int, str] = {}


def _fetch(session: Session, query: Select[Any], params: dict[str, Any]) -> Sequence[Any]:
    """The query's rows as plain tuples, in the session's transaction (or its autocommit).

    On PostgreSQL through the driver's own cursor: SQLAlchemy's result rows cost
    several microseconds a row more, a third of the export's CPU.
    """
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return connection.execute(query, params).all()
    sql = _SQL.get(id(query))
    if sql is None:
        sql = _SQL[id(query)] = str(query.compile(dialect=connection.dialect))
    raw = connection.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def fetch_rows(
    session: Session, version_id: str, kind: str, lo: int, hi: int
) -> Callable[[], list[dict[str, Any]]]:
    """Read rows ``lo <= seq < hi`` now; the function that renders them in export shape
    and order (it runs anywhere: the database is not touched again)."""
    fetched = _fetch(session, _QUERIES[kind], {"version_id": version_id, "lo": lo, "hi": hi})
    return lambda: _render_rows(kind, fetched)


def fetch_tuples(
    session: Session, version_id: str, kind: str, lo: int, hi: int
) -> Callable[[], Sequence[Any]]:
    """Read rows ``lo <= seq < hi`` now, as ``(user row, *label columns)`` tuples in
    :data:`ROW_KEYS` order (``user row`` is None for a label)."""
    fetched = _fetch(session, _QUERIES[kind], {"version_id": version_id, "lo": lo, "hi": hi})
    return lambda: fetched


def _render_rows(kind: str, fetched: Sequence[Any]) -> list[dict[str, Any]]:
    keys = ROW_KEYS[kind]
    render = _RENDER[kind]
    out: list[dict[str, Any]] = []
    for user, *label in fetched:
        if user is not None:
            out.append(user_row(kind, user))
            continue
        row = render(dict(zip(keys, label, strict=True)))
        if row is None:  # cannot happen for rows chosen by a filter of this kind
            raise RuntimeError(f"label {label[keys.index('id')]} has no {kind} row")
        out.append(row)
    return out


def read_rows(
    session: Session, version_id: str, kind: str, lo: int, hi: int
) -> list[dict[str, Any]]:
    """Rows ``lo <= seq < hi`` of a version, in export shape and order."""
    return fetch_rows(session, version_id, kind, lo, hi)()


# --------------------------------------------------------------------------- PostgreSQL lines

_escape = json.encoder.encode_basestring  # type: ignore[attr-defined]
"""A JSON string literal exactly as ``json.dumps(text, ensure_ascii=False)`` writes it (C)."""

# The label columns a line needs, in template order. jsonb columns come as their text,
# long texts through to_json (the server's C escaping balances the work between the
# two processes); provenance strings are quoted here and numbers formatted here.
_FRAGMENT_NAMES = {
    "sft": ("conversation", "completion", *(c.key for c in _PROVENANCE)),
    "preference": (
        "conversation",
        "response_a",
        "response_b",
        *(c.key for c in _PROVENANCE),
        "chosen_probability",
        "swap_disagreement",
    ),
}
_JSON_AS_TEXT = {"conversation", "principle_ids"}
_TO_JSON = {"completion", "response_a", "response_b"}


class _Quoted(dict[str, str]):
    """Quoted provenance strings, which repeat from row to row (one job, one model)."""

    def __missing__(self, value: str) -> str:
        quoted = self[value] = _escape(value)
        return quoted


def _mark(name: str) -> str:
    return f"\x00{name}\x00"


def _template(kind: str, p_a: float = 0.75) -> str:
    """A ``str.format`` template of a label's line: ``{i}`` is fragment ``i`` of the kind.

    Rendered by the core function itself with placeholder values, so that the keys,
    their order and the fixed parts (the assistant turn, the chosen side) are its own.
    """
    names = _FRAGMENT_NAMES[kind]
    label: dict[str, Any] = {name: _mark(name) for name in names}
    label["conversation"] = _mark("conversation")
    probability = 0.0
    if kind == "preference":
        label["p_a"] = p_a
        probability = p_a if p_a >= 0.5 else 1.0 - p_a
    line = jsonl_line(_RENDER[kind](label) or {})
    line = line.replace("{", "{{").replace("}", "}}")
    if kind == "preference":
        assert line.count(repr(probability)) == 1
        line = line.replace(repr(probability), json.dumps(_mark("chosen_probability")))
    for index, name in enumerate(names):
        encoded = json.dumps(_mark(name))
        assert line.count(encoded) == 1, name
        line = line.replace(encoded, f"{{{index}}}")
    assert not re.search(r"\\u0000", line)
    return line


def _fragment_query(kind: str) -> Select[Any]:
    names = [
        n for n in _FRAGMENT_NAMES[kind] if n not in ("chosen_probability", "swap_disagreement")
    ]
    columns = [
        cast(getattr(Label, n), Text)
        if n in _JSON_AS_TEXT
        else cast(func.to_json(getattr(Label, n)), Text)
        if n in _TO_JSON
        else getattr(Label, n)
        for n in names
    ]
    if kind == "preference":
        columns += [Label.p_a, Label.swap_disagreement]
    return _rows_query(*columns)


_FRAGMENT_QUERIES = {kind: _fragment_query(kind) for kind in _FRAGMENT_NAMES}
_SFT_LINE = _template("sft").format
_CHOSEN_A = _template("preference", 0.75).format
_CHOSEN_B = _template("preference", 0.25).format
_JSON_BOOL = {True: "true", False: "false", None: "null"}


def _postgres_lines(kind: str, result: Sequence[Any]) -> list[str]:
    lines: list[str] = []
    append = lines.append
    quoted = _Quoted()
    if kind == "sft":
        line = _SFT_LINE
        for user, conversation, completion, id_, job, ref, principles, model, rev, tmpl in result:
            if user is not None:
                append(jsonl_line(user_row(kind, user)))
                continue
            append(
                line(
                    conversation,
                    completion,
                    id_,
                    quoted[job],
                    quoted[ref],
                    principles,
                    quoted[model],
                    quoted[rev],
                    quoted[tmpl],
                )
            )
        return lines
    for row in result:
        user, conversation, a, b, id_, job, ref, principles, model, rev, tmpl, p_a, swap = row
        if user is not None:
            append(jsonl_line(user_row(kind, user)))
            continue
        line, probability = (_CHOSEN_A, p_a) if p_a >= 0.5 else (_CHOSEN_B, 1.0 - p_a)
        append(
            line(
                conversation,
                a,
                b,
                id_,
                quoted[job],
                quoted[ref],
                principles,
                quoted[model],
                quoted[rev],
                quoted[tmpl],
                repr(probability),
                _JSON_BOOL[swap],
            )
        )
    return lines


def fetch_lines(
    session: Session, version_id: str, kind: str, lo: int, hi: int
) -> Callable[[], list[str]]:
    """Read rows ``lo <= seq < hi`` now; the function that renders their JSONL lines."""
    if session.get_bind().dialect.name == "postgresql" and kind in _FRAGMENT_QUERIES:
        params = {"version_id": version_id, "lo": lo, "hi": hi}
        fetched = _fetch(session, _FRAGMENT_QUERIES[kind], params)
        return lambda: _postgres_lines(kind, fetched)
    rows = fetch_rows(session, version_id, kind, lo, hi)
    return lambda: [jsonl_line(row) for row in rows()]


def read_lines(session: Session, version_id: str, kind: str, lo: int, hi: int) -> list[str]:
    """The JSONL lines of rows ``lo <= seq < hi``."""
    return fetch_lines(session, version_id, kind, lo, hi)()


# --------------------------------------------------------------------------- streams


def _chunks(start: int, stop: int) -> Iterator[tuple[int, int]]:
    for lo in range(start, stop, CHUNK_ROWS):
        yield lo, min(lo + CHUNK_ROWS, stop)


def checksum(session: Session, version_id: str, kind: str, row_count: int) -> str:
    """sha256 of the full JSONL export, read through ``session`` (its transaction included)."""
    digest = hashlib.sha256()
    for lo, hi in _chunks(0, row_count):
        digest.update("".join(read_lines(session, version_id, kind, lo, hi)).encode())
    return digest.hexdigest()


SessionFactory = Callable[[], Session]
Fetcher = Callable[[Session, str, str, int, int], Callable[[], Any]]


@contextmanager
def _chunk_reader(
    sessions: SessionFactory, fetcher: Fetcher, version_id: str, kind: str
) -> Iterator[Callable[[int, int], Callable[[], Any]]]:
    """``fetch(lo, hi)`` for one export.

    On PostgreSQL one connection serves the whole export in autocommit: each chunk is
    one statement with its own snapshot, so no transaction stays open while the
    client reads, and a chunk costs one round trip (a session per chunk cost three:
    ping, query, rollback). On SQLite, where every transaction takes the write lock,
    each chunk gets its own short session.
    """
    session = sessions()
    if session.get_bind().dialect.name != "postgresql":
        session.close()

        def fetch_short(lo: int, hi: int) -> Callable[[], Any]:
            with sessions() as short:
                return fetcher(short, version_id, kind, lo, hi)

        yield fetch_short
        return
    try:
        session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        yield lambda lo, hi: fetcher(session, version_id, kind, lo, hi)
    finally:
        session.close()


def prefetched(
    sessions: SessionFactory, fetcher: Fetcher, version_id: str, kind: str, start: int, stop: int
) -> Iterator[Callable[[], Any]]:
    """Each chunk's renderer, in order; the next chunk is fetched by a thread while the
    caller renders and sends this one (one chunk ahead, no more), so the database's
    time overlaps the gateway's and the network's."""
    with (
        _chunk_reader(sessions, fetcher, version_id, kind) as fetch,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="export") as ahead,
    ):
        chunks = _chunks(start, stop)
        pending = [ahead.submit(fetch, *bounds) for bounds in islice(chunks, 1)]
        while pending:
            render = pending.pop().result()
            pending.extend(ahead.submit(fetch, *bounds) for bounds in islice(chunks, 1))
            yield render


def jsonl(
    sessions: SessionFactory, version_id: str, kind: str, start: int, stop: int
) -> Iterator[bytes]:
    """Lines ``start .. stop - 1``, one chunk of bytes per :data:`CHUNK_ROWS` rows."""
    for render in prefetched(sessions, fetch_lines, version_id, kind, start, stop):
        yield "".join(render()).encode()
