"""Smoke runs of the training benchmarks and the GPU suite, so the scripts cannot rot.

Each runs as a script in a subprocess on tiny random models (nothing is downloaded),
on the CPU; the assertions check what the numbers must satisfy, not their values.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.bench.conftest import run_bench

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _run(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return run_bench(script, *args, env={"OMP_NUM_THREADS": "1"}, timeout=timeout)


def _plots() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def test_pm_throughput_lockstep_at_each_batch_size(tmp_path: Path) -> None:
    out = tmp_path / "pm.json"
    _run(
        "pm_throughput.py",
        *("--threads", "1", "--steps", "2", "--warmup", "1", "--repeats", "1"),
        *("--lockstep-steps", "3", "--batch-size", "2", "--batch-sizes", "4"),
        *("--hidden", "32", "--layers", "1", "--words", "8", "--out", str(out)),
    )
    result = json.loads(out.read_text())
    by_size = result["lockstep"]["by_batch_size"]
    assert sorted(by_size) == ["2", "4"]  # the headline size is always measured
    for numbers in by_size.values():
        for clock in ("wall", "cpu"):
            charter, trl = numbers["charter"][clock], numbers["trl"][clock]
            assert charter > 0 and trl > 0
            assert numbers["ratio"][clock] == pytest.approx(charter / trl)
    assert result["lockstep"]["charter"] == by_size["2"]["charter"]
    assert len(result["end_to_end"]["runs"]["charter"]) == 1
    assert len(result["machine"]["load_average"]) == 3
    assert out.with_suffix(".svg").exists() == _plots()


def test_pm_throughput_refuses_bad_sizes(tmp_path: Path) -> None:
    done = run_bench("pm_throughput.py", "--batch-sizes", "4,x", timeout=120, expect=2)
    assert "--batch-sizes" in done.stderr


def test_ppo_step_times_each_rollout_size(tmp_path: Path) -> None:
    out = tmp_path / "ppo.json"
    _run(
        "ppo_step.py",
        *("--setups", "tiny", "--batch-sizes", "2,4", "--mini-batch-size", "2"),
        *("--steps", "1", "--warmup", "1", "--ppo-epochs", "1", "--response-length", "4"),
        *("--hidden", "32", "--threads", "1", "--out", str(out)),
    )
    results = json.loads(out.read_text())["results"]
    assert [r["batch_size"] for r in results] == [2, 4]
    for r in results:
        parts = r["generate_s"] + r["score_s"] + r["forward_s"] + r["update_s"]
        assert 0 < parts <= r["step_s"] * 1.001  # the breakdown is of the reported step
        assert 1 <= r["response_tokens_per_step"] <= r["batch_size"] * 4
        assert r["step_s_per_response"] == pytest.approx(r["step_s"] / r["batch_size"])
    assert out.with_suffix(".svg").exists() == _plots()


@pytest.fixture(scope="module")
def gpu_suite_quick(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu") / "suite.json"
    _run("gpu_suite.py", "--device", "cpu", "--quick", "--out", str(out), timeout=600)
    return json.loads(out.read_text())


def test_gpu_suite_quick_runs_every_section(gpu_suite_quick: dict[str, Any]) -> None:
    result = gpu_suite_quick
    names = {
        f"{s}_{d}"
        for s in ("scoring", "generation", "prefill", "prefix")
        for d in ("bfloat16", "float32")
    }
    assert names | {"pm", "ppo"} <= set(result["sections"])
    assert not result["skipped"] and "aborted" not in result
    assert result["elapsed_s"] < result["budget_s"]
    # no real weights in quick mode: the output says what was measured instead
    assert result["model"]["weights"].startswith("random-initialised")
    assert "synthetic" in result["model"]["tokenizer"]


def test_gpu_suite_engine_equals_plain_transformers_in_fp32(
    gpu_suite_quick: dict[str, Any],
) -> None:
    sections = gpu_suite_quick["sections"]
    scoring = sections["scoring_float32"]
    assert scoring["feedback_prompts"] == 4 and scoring["prompt_tokens"] > 0  # 2 pairs, 2 orders
    assert scoring["max_abs_delta_p_a"] < 1e-4
    generation = sections["generation_float32"]
    assert generation["engine_generated_tokens"] == generation["plain_generated_tokens"] > 0
    prefix = sections["prefix_float32"]
    assert prefix["on"]["reused"] is True and prefix["off"]["reused"] is False
    assert prefix["on"]["shared_prefix_tokens"] > 100  # few-shot examples are shared
    assert prefix["on"]["padded_tokens"] < prefix["off"]["padded_tokens"]
    assert prefix["max_abs_delta_p_a"] < 1e-4


def test_gpu_suite_prefill_and_training_numbers(gpu_suite_quick: dict[str, Any]) -> None:
    sections = gpu_suite_quick["sections"]
    prefill = sections["prefill_float32"]
    assert prefill["parameters"] > prefill["embedding_parameters"] > 0
    for shape in prefill["shapes"]:
        assert shape["tokens"] == shape["batch"] * shape["length"]
        assert shape["tokens_per_s"] == pytest.approx(shape["tokens"] / shape["seconds"])
        assert shape["mfu"] is None  # a CPU has no peak in the table
    pm = sections["pm"]
    assert pm["ratio"]["wall"] == pytest.approx(
        pm["samples_per_s"]["charter"]["wall"] / pm["samples_per_s"]["trl"]["wall"]
    )
    (ppo,) = sections["ppo"]
    assert ppo["step_s"] > 0 and ppo["response_tokens_per_step"] >= 1


def test_gpu_suite_skips_sections_once_the_budget_is_spent(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    _run("gpu_suite.py", "--device", "cpu", "--quick", "--budget-s", "0.01", "--out", str(out))
    result = json.loads(out.read_text())
    assert not result["sections"]
    assert set(result["skipped"].values()) == {"wall-time budget spent"}
    assert {"scoring_float32", "pm", "ppo"} <= set(result["skipped"])
