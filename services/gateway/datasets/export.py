"""Dataset rows -> JSONL or Parquet, streamed in constant memory.

A version's rows are ``dataset_rows`` ``0 .. row_count - 1`` (``seq``), each a
label (rendered with ``sft_row``/``preference_row``) or a user-supplied row.
Readers page through them by ``seq`` in chunks of :data:`CHUNK_ROWS`; exports open
a short session per chunk (the request's session is closed before the body
streams), so neither the rows nor a transaction are held while the client reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import Session

from charter.core.export import (
    COLUMNS,
    jsonl_line,
    preference_row,
    sft_row,
    user_row,
)
from charter.db.models import DatasetRow, Label

CHUNK_ROWS = 1000
"""Rows read (and sent) per step."""
ROW_GROUP_ROWS = 10_000
"""Rows per Parquet row group; each group is sent as soon as it is written."""

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
}
_RENDER: dict[str, Callable[..., dict[str, Any] | None]] = {
    "sft": sft_row,
    "preference": preference_row,
}


def _query(kind: str) -> Select[Any]:
    return (
        select(DatasetRow.row, *_LABEL_COLUMNS[kind])
        .select_from(DatasetRow)
        .outerjoin(Label, Label.id == DatasetRow.label_id)
        .where(
            DatasetRow.version_id == bindparam("version_id"),
            DatasetRow.seq >= bindparam("lo"),
            DatasetRow.seq < bindparam("hi"),
        )
        .order_by(DatasetRow.seq)
    )


_QUERIES = {kind: _query(kind) for kind in _LABEL_COLUMNS}
_KEYS = {kind: tuple(c.key for c in cols) for kind, cols in _LABEL_COLUMNS.items()}


def read_rows(
    session: Session, version_id: str, kind: str, lo: int, hi: int
) -> list[dict[str, Any]]:
    """Rows ``lo <= seq < hi`` of a version, in export shape and order."""
    keys = _KEYS[kind]
    render = _RENDER[kind]
    out: list[dict[str, Any]] = []
    for user, *label in session.execute(
        _QUERIES[kind], {"version_id": version_id, "lo": lo, "hi": hi}
    ):
        if user is not None:
            out.append(user_row(kind, user))
            continue
        row = render(dict(zip(keys, label, strict=True)))
        if row is None:  # cannot happen for rows chosen by a filter of this kind
            raise RuntimeError(f"label {label[keys.index('id')]} has no {kind} row")
        out.append(row)
    return out


def _chunks(start: int, stop: int) -> Iterator[tuple[int, int]]:
    for lo in range(start, stop, CHUNK_ROWS):
        yield lo, min(lo + CHUNK_ROWS, stop)


def checksum(session: Session, version_id: str, kind: str, row_count: int) -> str:
    """sha256 of the full JSONL export, read through ``session`` (its transaction included)."""
    digest = hashlib.sha256()
    for lo, hi in _chunks(0, row_count):
        rows = read_rows(session, version_id, kind, lo, hi)
        digest.update("".join(map(jsonl_line, rows)).encode())
    return digest.hexdigest()


SessionFactory = Callable[[], Session]


def _read(sessions: SessionFactory, version_id: str, kind: str, lo: int, hi: int) -> Any:
    with sessions() as session:
        return read_rows(session, version_id, kind, lo, hi)


def jsonl(
    sessions: SessionFactory, version_id: str, kind: str, start: int, stop: int
) -> Iterator[bytes]:
    """Lines ``start .. stop - 1``, one chunk of bytes per :data:`CHUNK_ROWS` rows."""
    for lo, hi in _chunks(start, stop):
        rows = _read(sessions, version_id, kind, lo, hi)
        yield "".join(map(jsonl_line, rows)).encode()


# --------------------------------------------------------------------------- parquet


def arrow_schema(kind: str) -> Any:
    """The fixed Parquet schema of an export (columns as in ``charter.core.export.COLUMNS``)."""
    import pyarrow as pa

    turns = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    types = {
        "prompt": turns,
        "completion": turns,
        "chosen": turns,
        "rejected": turns,
        "chosen_probability": pa.float64(),
        "swap_disagreement": pa.bool_(),
        "label_id": pa.int64(),
        "job_id": pa.string(),
        "constitution_ref": pa.string(),
        "principle_ids": pa.list_(pa.string()),
        "model": pa.string(),
        "model_revision": pa.string(),
        "template_hash": pa.string(),
    }
    return pa.schema([(name, types[name]) for name in COLUMNS[kind]])


class _Sink:
    """A write-only file that keeps what was written until it is drained."""

    closed = False

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        self._position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self._position

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def drain(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def parquet(
    sessions: SessionFactory, version_id: str, kind: str, start: int, stop: int
) -> Iterator[bytes]:
    """A Parquet file of rows ``start .. stop - 1``, sent row group by row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(kind)
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema)
    pending: list[dict[str, Any]] = []

    def flush_group() -> bytes:
        writer.write_table(pa.Table.from_pylist(pending, schema=schema))
        pending.clear()
        return sink.drain()

    try:
        for lo, hi in _chunks(start, stop):
            pending.extend(_read(sessions, version_id, kind, lo, hi))
            if len(pending) >= ROW_GROUP_ROWS:
                yield flush_group()
        if pending:
            yield flush_group()
    finally:
        writer.close()
    yield sink.drain()
