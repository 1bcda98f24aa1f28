"""Smoke runs of bench/label_throughput.py, so the benchmark cannot rot.

The scripted engine run needs nothing but the embedded stack; the tiny-model run
drives every side (engine, plain transformers loop, platform) with a random
2-layer Llama that uses SmolLM2's tokenizer, built from a config (nothing is
downloaded). Both start a real gateway and Celery worker, so they are marked slow.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.bench.conftest import run_bench

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "label_throughput.py"

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "result.json"
    run_bench(SCRIPT, "--pairs", "3", "--chunk-size", "2", "--out", str(out), *args, cwd=tmp_path)
    return json.loads(out.read_text())


def test_scripted_smoke_run_reports_engine_and_platform(tmp_path: Path) -> None:
    result = _run(tmp_path, "--engine", "scripted")
    assert result["items"] == 3 and result["feedback_prompts"] == 6
    summary = result["results"]
    assert summary["engine"]["labels_per_s"] > 0 and len(summary["engine"]["passes"]) == 3
    # before the platform, then after each of its two warm jobs
    assert len(summary["platform_warm"]["passes"]) == 2
    assert summary["platform_cold"]["seconds"] >= summary["platform_warm"]["seconds"] > 0
    # the platform's labels are the engine's labels
    assert summary["max_abs_p_a_diff_platform_vs_engine"] == 0
    assert "plain" not in summary and result["machine"]["nproc"] >= 1


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from charter.model_store import prepare_smollm2

    models_dir = Path(os.environ.get("CHARTER_MODELS_DIR", "~/.cache/charter/models"))
    smollm2 = prepare_smollm2(models_dir.expanduser() / "smollm2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-llama")
    transformers.LlamaForCausalLM(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (smollm2 / name).exists():
            shutil.copy(smollm2 / name, out / name)
    return out


def test_tiny_model_smoke_run_compares_all_three_sides(tmp_path: Path, tiny_model: Path) -> None:
    result = _run(tmp_path, "--model-dir", str(tiny_model), "--threads", "1")
    summary = result["results"]
    for side in ("engine", "plain", "platform_cold", "platform_warm"):
        assert summary[side]["labels_per_s"] > 0 and summary[side]["prompt_tokens_per_s"] > 0
    assert result["prompt_tokens"] > 0
    low, high = result["prompt_tokens_range"]
    assert 0 < low <= high
    # the engine's bucketed, prefix-reusing call gives batch-1's probabilities
    assert summary["max_abs_p_a_diff_engine_vs_plain"] < 1e-5
    assert summary["platform_warm_over_best"] > 0


@pytest.mark.parametrize(
    ("job", "calls_per_item"),
    [
        # a response, then one critique and one revision
        (["--job", "sl_cai", "--rounds", "1"], 3),
        # two responses, then per order a sampled reasoning and the A/B read
        (["--job", "rl_cai", "--chain-of-thought"], 6),
    ],
)
def test_tiny_model_smoke_run_of_generation_jobs(
    tmp_path: Path, tiny_model: Path, job: list[str], calls_per_item: int
) -> None:
    result = _run(
        tmp_path,
        "--model-dir",
        str(tiny_model),
        "--threads",
        "1",
        "--max-tokens",
        "4",
        "--warm-jobs",
        "1",
        "--plain-passes",
        "1",
        *job,
    )
    summary = result["results"]
    assert len(summary["engine"]["passes"]) == 2 and len(summary["plain"]["passes"]) == 1
    for side in ("engine", "plain"):
        # both sides make the same model calls, one prompt at a time or batched
        assert summary[side]["calls"] == calls_per_item * result["items"]
        assert 0 < summary[side]["generated_tokens"] <= 4 * summary[side]["calls"]
        assert summary[side]["prompt_tokens_per_s"] > 0
    for side in ("platform_cold", "platform_warm"):
        assert summary[side]["labels_per_s"] > 0 and summary[side]["prompt_tokens_per_s"] > 0
    # the worker wrote the in-process engine's texts (same seeds, same chunks)
    assert summary["platform_texts_equal_engine"] is True
    assert summary["platform_warm_over_best"] > 0 and summary["engine_over_plain"] > 0
    # the cost-against-size plot reads the result back
    svg = tmp_path / "cost.svg"
    run_bench(SCRIPT, "--plot", str(tmp_path / "result.json"), "--out", str(svg), timeout=120)
    assert "platform_warm (sqlite)" in svg.read_text()


def test_generation_plans_smoke_run(tmp_path: Path, tiny_model: Path) -> None:
    """bench/generation_plans.py: the three plans and both samplers, on the tiny model."""
    out = tmp_path / "plans.json"
    run_bench(
        "generation_plans.py",
        *("--model-dir", str(tiny_model), "--prompts", "3", "--max-tokens", "4"),
        *("--repeats", "1", "--out", str(out)),
        cwd=tmp_path,
    )
    result = json.loads(out.read_text())
    assert sorted(map(len, result["buckets"]["batch1"])) == [1, 1, 1]
    assert [sorted(b) for b in result["buckets"]["one_bucket"]] == [[0, 1, 2]]
    # the engine's sampler draws the tokens transformers' sorting top-p draws
    assert result["sampler_tokens_identical"] is True
    assert all(v > 0 for v in result["mean_cpu_seconds"].values())
