"""Batches uploaded from JSONL, CSV, Parquet and a saved ``datasets`` directory,
streamed to a live gateway, with progress."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from charter.client import CharterClient
from charter.sdk.uploads import ROWS_PER_CHUNK, SourceError, detect

PROMPTS = [f"Prompt number {i}, with a comma and ünïcode?" for i in range(ROWS_PER_CHUNK + 37)]


def _write(tmp_path: Path, format: str) -> Path:
    rows = [{"prompt": p} for p in PROMPTS]
    if format == "jsonl":
        path = tmp_path / "p.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif format == "csv":
        import csv

        path = tmp_path / "p.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, ["prompt"])
            writer.writeheader()
            writer.writerows(rows)
    elif format == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = tmp_path / "p.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100)
    else:
        datasets = pytest.importorskip("datasets")
        path = tmp_path / "saved"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("format", ["jsonl", "csv", "parquet", "datasets"])
def test_upload_each_format_streamed_with_progress(
    gateway: Any, admin_key: str, tmp_path: Path, format: str, monkeypatch: Any
) -> None:
    monkeypatch.setattr("charter.sdk.uploads.CHUNK_BYTES", 4096)  # a small file, many chunks
    path = _write(tmp_path, format)
    seen: list[tuple[int, int | None, str]] = []
    with CharterClient(gateway.url, admin_key) as sdk:
        batch = sdk.batches.upload(path, progress=lambda *p: seen.append(p))
        assert batch.row_count == len(PROMPTS)
        assert [p.prompt for p in sdk.batches.prompts(batch.id, limit=200)] == PROMPTS
    # Progress came in pieces (streamed), ending at the total.
    assert len(seen) >= 2 and seen[-1][0] == (seen[-1][1] or seen[-1][0])
    unit = "B" if format == "jsonl" else "rows"
    assert {s[2] for s in seen} == {unit}
    if format != "csv":
        assert seen[-1][1] == (path.stat().st_size if format == "jsonl" else len(PROMPTS))


def test_unreadable_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        detect(tmp_path / "missing.csv")
    with pytest.raises(SourceError, match="not one of"):
        detect(tmp_path, "xlsx")
    datasets = pytest.importorskip("datasets")
    both = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": "a"}])})
    both.save_to_disk(str(tmp_path / "dict"))
    with pytest.raises(SourceError, match="DatasetDict"):
        list(detect(tmp_path / "dict").chunks())


def test_a_bad_row_is_a_422_naming_the_line(gateway: Any, admin_key: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("question\nwhat?\n")
    from charter.sdk import BadRequest

    with CharterClient(gateway.url, admin_key) as sdk, pytest.raises(BadRequest) as bad:
        sdk.batches.upload(path)
    assert bad.value.status_code == 422 and "line 1" in str(bad.value.detail) + str(bad.value.field)
