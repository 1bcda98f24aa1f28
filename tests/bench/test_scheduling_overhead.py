"""Smoke runs of bench/scheduling_overhead.py, so the benchmark cannot rot.

Each starts a real gateway and real Celery worker processes on the scripted engine,
runs a few small jobs in lockstep over two worker counts, and the outbox phase;
the script itself checks that every item got exactly one label and that every
drain published each chunk once. Marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.conftest import run_bench

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "scheduling_overhead.py"

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "result.json"
    run_bench(
        SCRIPT,
        *("--sizes", "64,200", "--workers", "1,2", "--reps", "1"),
        *("--outbox-items", "480", "--outbox-reps", "1", "--out", str(out)),
        *args,
        cwd=tmp_path,
    )
    return json.loads(out.read_text())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_smoke_run_reports_per_item_cost_and_the_outbox(tmp_path: Path, backend: str) -> None:
    result = _run(tmp_path, "--backend", backend, "--broker-url", "redis://127.0.0.1:6379/14")
    summary = result["summary"]
    assert set(summary) == {"64x1", "64x2", "200x1", "200x2"}
    for row in summary.values():
        assert row["jobs"] == 1
        assert row["items_per_s"] > 0 and row["us_per_item"] > 0
        # the pipelines' own share is part of, hence below, the wall cost per item
        assert 0 < row["pipeline_us_per_item"] < row["us_per_item"]
    assert len(result["runs"]) == 4 and all(r["load_average"] for r in result["runs"])
    outbox = result["outbox"]
    assert outbox["chunks"] == 30  # 480 items in chunks of 16
    # the submission and the gateway's outbox thread published every chunk, once
    assert outbox["messages_after_submit"] == 30
    assert 0 < outbox["submit_answered_seconds"] <= outbox["submit_to_all_published_seconds"]
    assert outbox["drain_chunks_per_s"] > 0 and outbox["raw_messages_per_s"] > 0
    svg = (tmp_path / "result.svg").read_text()
    assert svg.startswith("<?xml") and "1 worker process" in svg and "2 worker processes" in svg
