"""Smoke run of bench/load_test.py: a few clients for a few seconds against the whole
stack (gateway subprocess, two Celery workers, the sweeper) on a scratch PostgreSQL
database with Redis db 9, then the row counts. Slow: it starts five processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.conftest import run_bench

pytestmark = pytest.mark.slow


def test_smoke_run_counts_every_submission_once(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    run_bench(
        "load_test.py",
        *("--clients", "3", "--seconds", "6", "--think", "0.1"),
        *("--broker-url", "redis://127.0.0.1:6379/9", "--out", str(out)),
        cwd=tmp_path,
    )
    result = json.loads(out.read_text())
    assert result["clients"] == 3 and result["server_errors"] == 0 and result["gave_up"] == 0
    counts = result["counts"]
    assert counts["jobs_accepted"] > 0
    assert counts["batches_stored"] == counts["batches_accepted"] >= counts["jobs_accepted"]
    assert counts["jobs_stored"] == counts["jobs_accepted"]
    assert counts["items"] == 16 * counts["jobs_stored"] == counts["labels"]
    for name in ("batches_unexpected", "batches_lost", "jobs_unexpected", "jobs_lost"):
        assert counts[name] == 0, name
    assert counts["items_without_label"] == counts["duplicate_labels"] == 0
    assert counts["jobs_not_completed"] == 0 and counts["results_read_short"] == 0
    routes = result["routes"]
    assert routes["create batch"]["statuses"].get("201") == counts["batches_accepted"]
    assert routes["submit job"]["statuses"].get("202") == counts["jobs_accepted"]
    for route in routes.values():
        assert route["requests"] > 0 and 0 < route["p50_ms"] <= route["p99_ms"] <= route["max_ms"]
