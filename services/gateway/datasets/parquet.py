"""Dataset rows -> a Parquet file, streamed row group by row group in constant memory.

Columns are built directly from the fetched tuples, column by column: a turns
column (``prompt``, ``completion``, ``chosen``, ``rejected``) becomes one Arrow
list-of-struct array from flat ``offsets``/``role``/``content`` lists, instead of
a dict per row and a struct per message handed to ``Table.from_pylist`` (which
cost two thirds of the export's CPU). The values are those of
``charter.core.export`` (``sft_row``, ``preference_row``, ``user_row``); the
tests compare the two formats row by row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import Any

from charter.core.export import COLUMNS, user_row
from charter.core.labels import chosen_rejected
from services.gateway.datasets import export
from services.gateway.datasets.export import ROW_KEYS, SessionFactory, fetch_tuples, prefetched

TURNS = ("prompt", "completion", "chosen", "rejected")
PROVENANCE = {
    "label_id": "id",
    "job_id": "job_id",
    "constitution_ref": "constitution_ref",
    "principle_ids": "principle_ids",
    "model": "model",
    "model_revision": "model_revision",
    "template_hash": "template_hash",
}


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
    if kind == "classifier":
        types |= {
            "prompt": pa.string(),
            "response": pa.string(),
            "category": pa.string(),
            "restricted": pa.bool_(),
            "harmful": pa.bool_(),
            "variant": pa.string(),
            "response_kind": pa.string(),
            "request_label_id": pa.int64(),
            "paraphrase_label_id": pa.int64(),
            "response_label_id": pa.int64(),
        }
    return pa.schema([(name, types[name]) for name in COLUMNS[kind]])


class _Turns:
    """A list<struct<role, content>> column as flat lists."""

    def __init__(self) -> None:
        self.offsets = [0]
        self.roles: list[str] = []
        self.contents: list[str] = []

    def add(self, turns: list[dict[str, str]]) -> None:
        for turn in turns:
            self.roles.append(turn["role"])
            self.contents.append(turn["content"])
        self.offsets.append(len(self.roles))

    def reply(self, text: str) -> None:
        self.roles.append("assistant")
        self.contents.append(text)
        self.offsets.append(len(self.roles))

    def replies(self, texts: Sequence[str]) -> None:
        """One assistant turn per row, for many rows at once."""
        base = len(self.roles)
        self.roles.extend(repeat("assistant", len(texts)))
        self.contents.extend(texts)
        self.offsets.extend(range(base + 1, base + len(texts) + 1))

    def array(self, type_: Any) -> Any:
        import pyarrow as pa

        struct = pa.StructArray.from_arrays(
            [pa.array(self.roles, pa.string()), pa.array(self.contents, pa.string())],
            fields=list(type_.value_type),
        )
        return pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), struct, type=type_)


class _Group:
    """One row group of a kind's columns, filled from fetched tuples."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.rows = 0
        turns = () if kind == "classifier" else TURNS  # a classifier row's prompt is text
        self.turns = {name: _Turns() for name in COLUMNS[kind] if name in turns}
        self.plain: dict[str, list[Any]] = {n: [] for n in COLUMNS[kind] if n not in turns}
        self._index = {key: i for i, key in enumerate(ROW_KEYS[kind])}

    def extend(self, fetched: Sequence[Any]) -> None:
        if not fetched:
            return
        columns = list(zip(*fetched, strict=True))
        if all(user is None for user in columns[0]):
            self._labels(columns[1:])  # the common case: column by column
        else:
            self._rows(fetched)

    def _labels(self, columns: list[tuple[Any, ...]]) -> None:
        """Label rows only, given as columns (``ROW_KEYS`` order)."""
        column = dict(zip(ROW_KEYS[self.kind], columns, strict=True))
        self.rows += len(columns[0])
        prompt = self.turns["prompt"]
        for conversation in column["conversation"]:
            prompt.add(conversation)
        if self.kind == "sft":
            self.turns["completion"].replies(column["completion"])
        else:
            sides = [chosen_rejected(p_a) for p_a in column["p_a"]]
            pairs = zip(sides, column["response_a"], column["response_b"], strict=True)
            chosen, rejected = zip(
                *((a, b) if side == "a" else (b, a) for (side, _), a, b in pairs), strict=True
            )
            self.turns["chosen"].replies(chosen)
            self.turns["rejected"].replies(rejected)
            self.plain["chosen_probability"].extend(p for _, p in sides)
            self.plain["swap_disagreement"].extend(column["swap_disagreement"])
        for name, key in PROVENANCE.items():
            self.plain[name].extend(column[key])

    def _rows(self, fetched: Sequence[Any]) -> None:
        """Any rows (user rows among labels), one by one."""
        at = self._index
        for user, *label in fetched:
            self.rows += 1
            if user is not None:
                self._user(user_row(self.kind, user))
                continue
            self.turns["prompt"].add(label[at["conversation"]])
            if self.kind == "sft":
                self.turns["completion"].reply(label[at["completion"]])
            else:
                side, p = chosen_rejected(label[at["p_a"]])
                a, b = label[at["response_a"]], label[at["response_b"]]
                chosen, rejected = (a, b) if side == "a" else (b, a)
                self.turns["chosen"].reply(chosen)
                self.turns["rejected"].reply(rejected)
                self.plain["chosen_probability"].append(p)
                self.plain["swap_disagreement"].append(label[at["swap_disagreement"]])
            for column, key in PROVENANCE.items():
                self.plain[column].append(label[at[key]])

    def _user(self, row: dict[str, Any]) -> None:
        for name, column in self.turns.items():
            column.add(row[name])
        for name, values in self.plain.items():
            values.append(row[name])

    def table(self, schema: Any) -> Any:
        import pyarrow as pa

        arrays = [
            self.turns[f.name].array(f.type)
            if f.name in self.turns
            else pa.array(self.plain[f.name], f.type)
            for f in schema
        ]
        return pa.Table.from_arrays(arrays, schema=schema)


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
    import pyarrow.parquet as pq

    schema = arrow_schema(kind)
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema)
    group = _Group(kind)
    try:
        for fetched in prefetched(sessions, fetch_tuples, version_id, kind, start, stop):
            group.extend(fetched())
            if group.rows >= export.ROW_GROUP_ROWS:
                writer.write_table(group.table(schema))
                group = _Group(kind)
                yield sink.drain()
        if group.rows:
            writer.write_table(group.table(schema))
            yield sink.drain()
    finally:
        writer.close()
    yield sink.drain()
