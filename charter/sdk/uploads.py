"""Rows to upload, read from JSONL, CSV, Parquet or a saved ``datasets`` directory and
streamed as JSONL chunks (never the whole file in memory), with progress.

JSONL is sent as its bytes; the other formats are read row by row (CSV with
``csv.DictReader``, Parquet in record batches with pyarrow, a directory with
``datasets.load_from_disk``) and re-encoded one JSON object per line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK_BYTES = 256 * 1024
ROWS_PER_CHUNK = 500
FORMATS = ("jsonl", "csv", "parquet", "datasets")


class SourceError(ValueError):
    """A file the SDK cannot read rows from (format, or a missing path)."""


# Called as rows or bytes go out: (done, total or None, unit "B" or "rows").
ProgressCallback = Callable[[int, int | None, str], None]


@dataclass(frozen=True)
class Source:
    """A file (or directory) of rows and how to stream it."""

    path: Path
    format: str

    @property
    def unit(self) -> str:
        return "B" if self.format == "jsonl" else "rows"

    @property
    def total(self) -> int | None:
        """Bytes for JSONL, rows for Parquet and datasets, unknown for CSV."""
        if self.format == "jsonl":
            return self.path.stat().st_size
        if self.format == "parquet":
            import pyarrow.parquet as pq

            return int(pq.read_metadata(self.path).num_rows)
        if self.format == "datasets":
            return len(_load_dataset(self.path))
        return None

    def chunks(self, progress: ProgressCallback | None = None) -> Iterator[bytes]:
        """The JSONL body in chunks; ``progress`` hears each one go."""
        done, total = 0, self.total if progress else None
        for chunk, amount in self._chunks():
            yield chunk
            done += amount
            if progress:
                progress(done, total, self.unit)

    def body(self, progress: ProgressCallback | None = None) -> Callable[[], Iterable[bytes]]:
        """A body that is re-read from the start on each attempt of a retried upload."""
        return lambda: self.chunks(progress)

    def _chunks(self) -> Iterator[tuple[bytes, int]]:
        if self.format == "jsonl":
            with self.path.open("rb") as f:
                while chunk := f.read(CHUNK_BYTES):
                    yield chunk, len(chunk)
            return
        yield from _batched(self._rows())

    def _rows(self) -> Iterator[dict[str, Any]]:
        if self.format == "csv":
            with self.path.open(newline="", encoding="utf-8") as f:
                yield from csv.DictReader(f)
        elif self.format == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(self.path).iter_batches(batch_size=ROWS_PER_CHUNK):
                yield from batch.to_pylist()
        else:
            yield from _load_dataset(self.path)


def _load_dataset(path: Path) -> Any:
    try:
        import datasets
    except ImportError as exc:  # an optional dependency of the SDK
        raise SourceError(f"{path}: reading a datasets directory needs `datasets`") from exc
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        raise SourceError(
            f"{path}: a DatasetDict ({', '.join(loaded)}); pass one split's directory"
        )
    return loaded


def _batched(rows: Iterable[dict[str, Any]]) -> Iterator[tuple[bytes, int]]:
    lines: list[bytes] = []
    for row in rows:
        lines.append(json.dumps(row, ensure_ascii=False, default=str).encode() + b"\n")
        if len(lines) == ROWS_PER_CHUNK:
            yield b"".join(lines), len(lines)
            lines = []
    if lines:
        yield b"".join(lines), len(lines)


def detect(path: Path | str, format: str | None = None) -> Source:
    """The source at ``path``: ``format`` if given, else from the suffix (a directory
    is a ``datasets.save_to_disk`` one; an unknown suffix is read as JSONL)."""
    path = Path(path)
    if format is None:
        if path.is_dir():
            format = "datasets"
        else:
            suffix = path.suffix.lower()
            format = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}.get(
                suffix, "parquet" if suffix in {".parquet", ".pq"} else None
            )
        format = format or "jsonl"  # the API's own format
    if format not in FORMATS:
        raise SourceError(f"format {format!r} is not one of {', '.join(FORMATS)}")
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    return Source(path, format)
