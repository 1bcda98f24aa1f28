"""A dataset export to a file, resumable: the bookkeeping both clients share.

Each client only opens the stream and feeds chunks to :meth:`Export.write`; where to
resume after a drop, how long to wait, and the final checksum are decided here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from charter.sdk.errors import ChecksumMismatch
from charter.sdk.uploads import ProgressCallback


class Export:
    """Stream version ``ref`` to ``dest``.

    A dropped connection is resumed from the last complete JSONL line (Parquet
    starts over), pinned to the version first served; ``resume`` also continues a
    partial JSONL file already at ``dest``. ``verify``: the JSONL file's sha256 must
    equal the version's checksum and the row count must match (Parquet: the row
    count, when pyarrow is there).
    """

    def __init__(
        self,
        ref: str,
        dest: Path | str,
        format: str = "jsonl",
        *,
        verify: bool = True,
        retries: int = 5,
        resume: bool = False,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.ref, self.dest, self.format = ref, Path(dest), format
        self.verify, self.retries, self.progress = verify, retries, progress
        self.jsonl = format == "jsonl"
        self.rows, self.good = 0, 0  # complete JSONL rows on disk, and the bytes they fill
        if self.jsonl and resume and self.dest.exists():
            data = self.dest.read_bytes()
            self.good = data.rfind(b"\n") + 1
            self.rows = data.count(b"\n", 0, self.good)
            del data
        with self.dest.open("r+b" if self.good else "wb") as out:
            out.truncate(self.good)
        self.attempts = 0
        self.info: dict[str, Any] = {}

    def request(self) -> tuple[str, dict[str, Any]]:
        """The path and query of the next attempt."""
        ref = self.info.get("ref", self.ref)
        return f"/v1/datasets/{ref}/export", {"format": self.format, "start": self.rows}

    def started(self, headers: Mapping[str, str]) -> None:
        self.info = {
            "ref": headers.get("x-dataset-ref", self.ref),
            "checksum": headers.get("x-checksum-sha256"),
            "rows": int(headers.get("x-row-count", "0")),
        }

    def write(self, out: IO[bytes], chunk: bytes) -> None:
        out.write(chunk)
        if self.jsonl and (end := chunk.rfind(b"\n")) >= 0:
            self.good = out.tell() - len(chunk) + end + 1
            self.rows += chunk.count(b"\n")
            if self.progress:
                self.progress(self.rows, self.info.get("rows"), "rows")

    def dropped(self, error: Exception) -> float:
        """After a dropped stream: cut the file back, and how long to wait (re-raises
        ``error`` once the retries are spent)."""
        self.attempts += 1
        if self.attempts > self.retries:
            raise error
        with self.dest.open("r+b") as out:
            out.truncate(self.good if self.jsonl else 0)
        self.rows = self.rows if self.jsonl else 0
        return min(0.2 * 2**self.attempts, 5.0)

    def finish(self) -> dict[str, Any]:
        """``{ref, path, format, rows, checksum, retries}``, verified if asked."""
        info = self.info
        if self.verify:
            if self.jsonl:
                with self.dest.open("rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                if digest != info["checksum"] or self.rows != info["rows"]:
                    raise ChecksumMismatch(
                        f"{self.dest}: sha256 {digest} over {self.rows} rows, expected "
                        f"{info['checksum']} over {info['rows']} rows"
                    )
            else:
                try:
                    import pyarrow.parquet as pq
                except ImportError:  # pyarrow is optional for the SDK
                    pq = None
                if pq is not None and pq.read_metadata(self.dest).num_rows != info["rows"]:
                    raise ChecksumMismatch(f"{self.dest}: not {info['rows']} rows")
        if self.progress and not self.jsonl:
            self.progress(info["rows"], info["rows"], "rows")
        return {
            "ref": info["ref"],
            "path": str(self.dest),
            "format": self.format,
            "rows": info["rows"],
            "checksum": info["checksum"],
            "retries": self.attempts,
        }
