"""A smoke run of bench/export_throughput.py, so the benchmark cannot rot.

Small sizes on a scratch PostgreSQL database: labels are seeded, frozen both ways
(in the background through the gateway, and in one transaction as the old request
did; the script asserts that both give the same rows and checksum), exported as
JSONL and Parquet by a real uvicorn gateway and by ``COPY TO``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.bench.conftest import run_bench

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "export_throughput.py"

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["sft", "preference"])
def test_smoke_run_freezes_exports_and_plots(
    tmp_path: Path, postgres_server: URL, kind: str
) -> None:
    out = tmp_path / "export.json"
    run_bench(
        SCRIPT,
        *("--kind", kind, "--sizes", "300,1200", "--repeat", "1", "--out", str(out)),
        cwd=tmp_path,
        env={"CHARTER_TEST_POSTGRES_URL": postgres_server.render_as_string(hide_password=False)},
    )
    result = json.loads(out.read_text())
    assert result["kind"] == kind and result["sizes"] == [300, 1200]
    assert [f["rows"] for f in result["freeze"]] == [300, 1200]
    for freeze in result["freeze"]:
        # The POST answered before the rows were frozen; the freeze then completed.
        assert 0 < freeze["background_answered_seconds"] < freeze["background_seconds"]
        assert freeze["one_transaction_seconds"] > 0
    exports = result["export"]
    assert [e["rows"] for e in exports] == [300, 1200]
    small, large = exports
    for fmt in ("jsonl", "parquet"):
        assert small[fmt]["rows_per_s"] > 0 and small[fmt]["ratio_median"] > 0
        # Four times the rows: more bytes, and memory bounded by a chunk, not the rows.
        assert large[fmt]["mib"] > small[fmt]["mib"]
        assert large[fmt]["rss_mib_max"] < 1024
    assert large["copy_mib"] > small["copy_mib"] > 0
    assert result["export_gateway_idle_rss_mib"] <= large["gateway_peak_rss_mib_after"]
    for plot in (out.with_suffix(".svg"), tmp_path / "export_freeze.svg"):
        assert plot.read_text().lstrip().startswith(("<?xml", "<svg"))
