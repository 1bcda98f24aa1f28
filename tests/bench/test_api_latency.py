"""Smoke run of bench/api_latency.py, so the benchmark cannot rot.

A few requests per point against real gateways (uvicorn subprocesses, 1 and 2
workers) on a scratch PostgreSQL database with Redis db 13 as the broker, and a
short profiled load. Slow: it starts three gateway processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.conftest import run_bench

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "api_latency.py"
REQUESTS = 12

pytestmark = pytest.mark.slow


def test_smoke_run_measures_every_side_point_and_op(tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    profile = tmp_path / "profile.txt"
    run_bench(
        SCRIPT,
        *("--clients", "2,4", "--requests", str(REQUESTS), "--rounds", "2"),
        *("--workers", "1,2", "--rows", "3"),
        *("--profile", str(profile), "--out", str(out)),
        cwd=tmp_path,
    )
    result = json.loads(out.read_text())
    assert result["rows_per_job"] == 3 and result["clients"] == [2, 4]
    assert len(result["machine_before"]["load_average"]) == 3
    assert set(result["results"]) == {"1 worker", "2 workers"}
    for side in result["results"].values():
        assert set(side) == {"2", "4"}
        for point in side.values():
            for op in ("submit", "status"):
                s = point[op]
                assert s["requests"] == 2 * REQUESTS and s["errors"] == {}
                assert 0 < s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
                assert len(s["per_round_p99_ms"]) == 2 and max(s["per_round_p99_ms"]) <= s["max_ms"]
                assert s["requests_per_s"] > 0 and s["gateway_cpu_ms_per_request"] > 0
                assert 0 < s["client_cpu_cores"] < 2
    for op in ("submit", "status"):
        svg = (tmp_path / f"latency_{op}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # the profile covers the event loop and the threadpool's unit-of-work calls
    report = profile.read_text()
    assert "== event loop thread ==" in report and "UnitOfWorkRoute._admit" in report
    assert "submit_job" in report and "get_job" in report
