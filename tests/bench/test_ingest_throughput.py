"""Smoke run of bench/ingest_throughput.py: both sides store the same rows, the result
and its plot are written, and the gateway's peak memory does not grow with the rows."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path
from types import ModuleType

import pytest

from services.gateway.batches.schemas import PromptRow
from services.gateway.batches.service import plain_record, record
from tests.bench.conftest import run_bench

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "ingest_throughput.py"

pytestmark = pytest.mark.slow


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ingest_throughput", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_rows_are_deterministic_and_take_the_fast_path() -> None:
    bench = _bench()
    rows = [bench.make_row(random.Random(0)) for _ in range(2)]
    assert rows[0] == rows[1]
    rng = random.Random(0)
    rows = [bench.make_row(rng) for _ in range(2000)]
    assert {frozenset(r) for r in rows} == {
        frozenset({"prompt"}),
        frozenset({"messages"}),
        frozenset({"prompt", "response"}),
        frozenset({"prompt", "response_a", "response_b"}),
    }
    prompts = [len(r["prompt"]) for r in rows if "prompt" in r]
    assert min(prompts) == 50 and max(prompts) == 400
    for row in rows:  # the benchmark measures the path real rows take
        value = json.loads(json.dumps(row))
        assert plain_record(value) == record(PromptRow.model_validate(value)), row


def test_smoke_run_stores_the_same_rows_with_flat_memory(tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    run_bench(SCRIPT, "--rows", "3000,30000", "--repeat", "2", "--out", str(out), cwd=tmp_path)
    result = json.loads(out.read_text())
    assert result["machine"]["nproc"] >= 1 and len(result["machine"]["load_average"]) == 3
    small, large = result["results"]
    for size in (small, large):
        # the script itself refuses to report when the two sides stored different rows
        assert size["stored_checksum"].startswith(f"{size['rows']}:")
        assert len(size["gateway_seconds"]) == len(size["copy_seconds"]) == 2
        assert size["gateway_rows_per_s"] > 0 and size["copy_rows_per_s"] > 0
        assert size["ratio_per_turn"] == [
            round(c / g, 3)
            for g, c in zip(size["gateway_seconds"], size["copy_seconds"], strict=True)
        ]
    assert large["jsonl_bytes"] > 9 * small["jsonl_bytes"]
    # Rows stream into COPY: 27,000 more rows (~10 MB of JSONL) cost well under 10 MiB
    # of peak memory (holding them, as uploads once did, took ~2.3 KiB a row: ~60 MiB).
    assert large["gateway_peak_rss_mib"] - small["gateway_peak_rss_mib"] < 10
    assert out.with_suffix(".svg").read_text().lstrip().startswith("<?xml")
