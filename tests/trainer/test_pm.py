"""Preference-model training on soft labels: loss, collator, config, outputs and calibration.

Models are tiny random-initialised Llamas over a word-level tokenizer (conftest.py)
(nothing is downloaded). The key test trains a soft-label PM and a hard-label PM
on pairs whose true preference probability is known and checks on held-out pairs
that only the soft one is calibrated.
"""

# Heavy imports follow the importorskip guards.
# ruff: noqa: E402
from __future__ import annotations

import json
import math
import os
import random
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from datasets import Dataset
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from charter.core.export import preference_row
from services.trainer.pm_config import PMConfig
from services.trainer.pm_trainer import (
    PMTrainer,
    SoftPreferenceCollator,
    calibration,
    evaluate_pm,
    preference_dataset,
    soft_preference_loss,
    train_pm,
)
from services.trainer.trl_training import TRAINING_FILE

# --------------------------------------------------------------------------- tiny models

MARKER = "good"
FILLERS = ("ok", "fine", "so", "the", "a", "it", "is", "here")
WORDS = ("system", "user", "assistant", "rate", "this", "answer", MARKER, *FILLERS)
PM_SIZE = {"max_position_embeddings": 64, "num_labels": 1}
"""LlamaConfig fields of the tiny models here, on top of the shared ones."""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(word_tokenizer: Callable[..., PreTrainedTokenizerFast]) -> PreTrainedTokenizerFast:
    """One token per word, 19 tokens in all."""
    return word_tokenizer(WORDS)


@pytest.fixture(scope="module")
def tiny_pm(tiny_llama: Callable[..., Any]) -> Callable[..., LlamaForSequenceClassification]:
    """``tiny_pm(tokenizer, seed=0)``: a random-initialised one-label Llama PM."""
    return partial(tiny_llama, LlamaForSequenceClassification, **PM_SIZE)


# --------------------------------------------------------------------------- synthetic labels

K = math.log(0.95 / 0.05) / 3
"""True reward = K * (marker count); counts 0..3, so P(better) = sigmoid(K * diff) lies in [0.5, 0.95]."""
LENGTH = 8
"""Words per response: fixed, so the marker count is also the marker fraction."""


def true_p(count_a: int, count_b: int) -> float:
    return 1.0 / (1.0 + math.exp(-K * (count_a - count_b)))


def _response(rng: random.Random, count: int) -> str:
    words = [rng.choice(FILLERS) for _ in range(LENGTH)]
    for i in rng.sample(range(LENGTH), count):
        words[i] = MARKER
    return " ".join(words)


def label(i: int, response_a: str, response_b: str, p_a: float) -> dict[str, Any]:
    """A label as the workers store it (RL-CAI feedback), provenance included."""
    return {
        "id": f"label-{i}",
        "job_id": "job-1",
        "constitution_ref": "default@1",
        "principle_ids": ["harmless-1"],
        "model": "smollm2-135m",
        "model_revision": "0123456789abcdef",
        "template_hash": "fedcba9876543210",
        "conversation": [{"role": "user", "content": "rate this answer"}],
        "response_a": response_a,
        "response_b": response_b,
        "p_a": p_a,
        "swap_disagreement": i % 7 == 0,
        "completion": None,
    }


def synthetic_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Exported preference rows whose soft label is the true preference probability."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        count_a, count_b = rng.randint(0, 3), rng.randint(0, 3)
        p_a = true_p(count_a, count_b)
        row = preference_row(label(i, _response(rng, count_a), _response(rng, count_b), p_a))
        assert row is not None
        rows.append(row)
    return rows


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_all_changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    for name, old in before.items():
        assert not torch.equal(old, model.get_parameter(name)), f"{name} did not change"


# --------------------------------------------------------------------------- loss and collator


def test_soft_loss_is_trl_hard_loss_at_p_one_and_minimal_at_the_label() -> None:
    margin = torch.tensor([-2.0, -0.1, 0.0, 0.7, 3.0])
    hard = -torch.nn.functional.logsigmoid(margin).mean()
    assert torch.allclose(soft_preference_loss(margin, torch.ones(5)), hard)

    # The minimiser of the soft loss is sigmoid(d) = p: zero gradient there.
    p = torch.tensor([0.5, 0.6, 0.8, 0.95])
    d = torch.logit(p).requires_grad_(True)
    soft_preference_loss(d, p).backward()
    assert d.grad is not None
    assert torch.allclose(d.grad, torch.zeros(4), atol=1e-6)


def test_collator_carries_the_soft_label_next_to_trl_batch() -> None:
    examples = [
        {"chosen_ids": [1, 2, 3], "rejected_ids": [4, 5], "chosen_probability": 0.9},
        {"chosen_ids": [6, 7], "rejected_ids": [8], "chosen_probability": 0.6},
    ]
    batch = SoftPreferenceCollator(pad_token_id=0)(examples)
    trl_batch = DataCollatorForPreference(pad_token_id=0)(examples)
    assert torch.equal(batch["input_ids"], trl_batch["input_ids"])
    assert torch.equal(batch["attention_mask"], trl_batch["attention_mask"])
    assert torch.allclose(batch["chosen_probability"], torch.tensor([0.9, 0.6]))
    hard = SoftPreferenceCollator(pad_token_id=0)([{"chosen_ids": [1], "rejected_ids": [2]}])
    assert "chosen_probability" not in hard


def test_trainer_loss_equals_trl_at_p_one_and_soft_formula_otherwise(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path, tiny_pm: Callable[..., Any]
) -> None:
    rows = synthetic_rows(8, seed=3)
    args = RewardConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        report_to="none",
        bf16=False,
        activation_checkpointing=False,
        disable_dropout=True,
    )
    model = tiny_pm(tokenizer)

    def first_loss(trainer: RewardTrainer) -> torch.Tensor:
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            return trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))

    ones = [r | {"chosen_probability": 1.0} for r in rows]
    pm_trainer = PMTrainer(
        model, args, train_dataset=preference_dataset(ones), processing_class=tokenizer
    )
    trl_trainer = RewardTrainer(
        model, args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    assert isinstance(pm_trainer.data_collator, SoftPreferenceCollator)
    assert torch.allclose(first_loss(pm_trainer), first_loss(trl_trainer), atol=1e-6)

    soft = PMTrainer(
        model, args, train_dataset=preference_dataset(rows), processing_class=tokenizer
    )
    batch = soft._prepare_inputs(next(iter(soft.get_train_dataloader())))
    p = batch["chosen_probability"].clone()
    with torch.no_grad():
        chosen, rejected = (
            soft.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            .logits.squeeze(-1)
            .chunk(2)
        )
        expected = (
            -(p * torch.nn.functional.logsigmoid(chosen - rejected)).mean()
            - ((1 - p) * torch.nn.functional.logsigmoid(rejected - chosen)).mean()
        )
        assert torch.allclose(soft.compute_loss(soft.model, batch), expected, atol=1e-6)


# --------------------------------------------------------------------------- config


def test_config_validates_and_hashes_what_affects_training() -> None:
    config = PMConfig()
    assert config.config_hash() == PMConfig().config_hash()
    assert PMConfig(logging_steps=1, eval_steps=5).config_hash() == config.config_hash()
    assert PMConfig(soft_labels=False).config_hash() != config.config_hash()
    assert PMConfig(learning_rate=2e-5).config_hash() != config.config_hash()
    assert PMConfig.from_dict(json.loads(json.dumps(config.as_dict()))) == config
    with pytest.raises(ValueError, match="unknown"):
        PMConfig.from_dict({"learning_rte": 1e-5})
    for bad in (
        {"learning_rate": 0.0},
        {"per_device_train_batch_size": 0},
        {"max_steps": 0},
        {"num_train_epochs": 0.0},
        {"max_length": 1},
        {"center_rewards_coefficient": -0.1},
        {"warmup_steps": -1.0},
    ):
        with pytest.raises(ValueError):
            PMConfig(**bad)  # type: ignore[arg-type]
    args = PMConfig(max_steps=7, soft_labels=False).training_args("out")
    assert isinstance(args, RewardConfig)
    assert (args.max_steps, args.save_strategy, args.gradient_checkpointing) == (7, "no", False)


def test_preference_dataset_drops_provenance_and_checks_labels() -> None:
    rows = synthetic_rows(4, seed=5)
    assert {"label_id", "job_id", "swap_disagreement"} <= set(rows[0])
    dataset = preference_dataset(rows)
    assert dataset.column_names == ["prompt", "chosen", "rejected", "chosen_probability"]
    assert "chosen_probability" not in preference_dataset(rows, soft_labels=False).column_names
    with pytest.raises(ValueError, match="chosen_probability"):
        preference_dataset([rows[0] | {"chosen_probability": 1.5}])
    with pytest.raises(ValueError, match="rejected"):
        preference_dataset([{"prompt": rows[0]["prompt"], "chosen": rows[0]["chosen"]}])


# --------------------------------------------------------------------------- metrics


def test_calibration_ece_and_reliability_table() -> None:
    predicted = torch.tensor([0.55, 0.58, 0.92, 0.97])
    label = torch.tensor([0.5, 0.5, 0.95, 0.95])
    ece, table = calibration(predicted, label, bins=10)
    # Two bins, two pairs each: |0.565 - 0.5| and |0.945 - 0.95|, weighted 1/2 each.
    assert ece == pytest.approx(0.5 * 0.065 + 0.5 * 0.005, abs=1e-6)
    assert [(b.lower, b.upper, b.count) for b in table] == [(0.5, 0.6, 2), (0.9, 1.0, 2)]
    assert table[0].mean_predicted == pytest.approx(0.565)
    assert table[1].mean_label == pytest.approx(0.95)
    assert calibration(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]))[0] == 0.0


# --------------------------------------------------------------------------- end to end


def test_train_pm_on_exported_rows(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path, tiny_pm: Callable[..., Any]
) -> None:
    rows = synthetic_rows(48, seed=1)
    model = tiny_pm(tokenizer)
    before = snapshot(model)
    reports: list[tuple[int, dict[str, float]]] = []
    config = PMConfig(
        learning_rate=1e-3,
        max_steps=6,
        per_device_train_batch_size=8,
        logging_steps=2,
        eval_steps=3,
    )
    result = train_pm(
        model,
        rows[:32],
        rows[32:],
        config,
        tmp_path / "pm",
        tokenizer=tokenizer,
        report=lambda step, metrics: reports.append((step, metrics)),
    )

    assert_all_changed(before, model)
    assert result.global_step == 6
    assert result.config_hash == config.config_hash()
    assert result.evaluation is not None and result.evaluation.n == 16
    assert 0.0 <= result.evaluation.ece <= 1.0
    assert sum(b.count for b in result.evaluation.reliability) == 16
    assert result.metrics["eval_ece"] == result.evaluation.ece
    assert "train_loss" in result.metrics

    # The hook sees training logs (TRL's metrics, plus the confidence gap), in-training
    # evaluations and the final calibration.
    steps = [step for step, _ in reports]
    assert steps == sorted(steps) and steps[0] == 2
    logged = {k for _, metrics in reports for k in metrics}
    assert {"loss", "accuracy", "margin", "confidence_gap", "eval_loss", "eval_ece"} <= logged
    assert all(isinstance(v, float) for _, metrics in reports for v in metrics.values())

    # A complete model directory: reloads as a one-label classifier scoring as trained.
    out = result.output_dir
    record = json.loads((out / TRAINING_FILE).read_text())
    assert record["method"] == "pm" and record["config_hash"] == config.config_hash()
    assert PMConfig.from_dict(record["config"]) == config
    assert record["evaluation"]["n"] == 16
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert reloaded.config.num_labels == 1
    conversation = rows[0]["prompt"] + rows[0]["chosen"]
    ids = tokenizer.apply_chat_template(conversation, return_dict=True, return_tensors="pt")[
        "input_ids"
    ]
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


def test_train_pm_from_a_causal_lm_directory(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path, tiny_llama: Callable[..., Any]
) -> None:
    # A policy checkpoint gets a fresh score head; the tokenizer comes from the directory.
    source = tmp_path / "policy"
    tiny_llama(LlamaForCausalLM, tokenizer, seed=0, **PM_SIZE).save_pretrained(source)
    tokenizer.save_pretrained(source)
    # eval_steps without eval rows: no evaluation rather than a failure mid-run
    config = PMConfig(max_steps=2, eval_steps=1)
    result = train_pm(source, synthetic_rows(16, seed=2), None, config, tmp_path / "pm")
    assert result.global_step == 2 and result.evaluation is None
    assert AutoTokenizer.from_pretrained(result.output_dir).chat_template == tokenizer.chat_template


def test_plain_trl_reward_trainer_accepts_exported_rows(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path, tiny_pm: Callable[..., Any]
) -> None:
    # Charter's rows, provenance and soft label included, go to TRL as they are.
    model = tiny_pm(tokenizer)
    before = snapshot(model)
    args = RewardConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        report_to="none",
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
    )
    trainer = RewardTrainer(
        model,
        args,
        train_dataset=Dataset.from_list(synthetic_rows(8, seed=4)),
        processing_class=tokenizer,
    )
    trainer.train()
    assert_all_changed(before, model)


# --------------------------------------------------------------------------- calibration proof


def test_soft_labels_give_a_calibrated_pm_and_hard_labels_an_overconfident_one(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path, tiny_pm: Callable[..., Any]
) -> None:
    """Pairs with a known true preference probability p = sigmoid(K * (count_c - count_r)).

    The soft labels are exactly the true p, so the held-out ECE measures only how
    far the PM's sigmoid(d) is from p (no outcome-sampling noise). A PM that learns
    r = K * count has ECE 0; over seeds the soft PM lands at ECE ~0.002, so 0.05
    leaves a wide margin. The hard-label PM is pushed towards P = 1 on every pair
    that has a winner and lands near ECE 0.1 with its mean prediction ~0.1 above
    the mean true p.
    """
    train, held_out = synthetic_rows(512, seed=10), synthetic_rows(256, seed=11)
    mean_true = sum(r["chosen_probability"] for r in held_out) / len(held_out)
    entropy = -sum(
        p * math.log(p) + (1 - p) * math.log(1 - p)
        for p in (r["chosen_probability"] for r in held_out)
    ) / len(held_out)

    results = {}
    for soft in (True, False):
        config = PMConfig(
            learning_rate=3e-3,
            num_train_epochs=4,
            per_device_train_batch_size=16,
            per_device_eval_batch_size=64,
            warmup_steps=0.1,
            soft_labels=soft,
            logging_steps=1000,
        )
        result = train_pm(
            tiny_pm(tokenizer),
            train,
            held_out,
            config,
            tmp_path / f"pm-{soft}",
            tokenizer=tokenizer,
        )
        assert result.evaluation is not None
        results[soft] = result.evaluation

    soft_pm, hard_pm = results[True], results[False]
    assert soft_pm.mean_label == pytest.approx(mean_true) == hard_pm.mean_label
    # Both rank pairs alike (a quarter of the pairs are ties, p = 0.5, which no PM "gets right").
    assert soft_pm.accuracy > 0.8 and hard_pm.accuracy > 0.8
    # Soft: calibrated, bin by bin and on average, and its NLL is near the floor
    # (the labels' entropy; the excess is KL(label || PM)).
    assert soft_pm.ece < 0.05
    assert abs(soft_pm.mean_predicted - mean_true) < 0.03
    assert soft_pm.nll - entropy < 0.02
    # Hard: over-confident, and clearly worse calibrated.
    assert hard_pm.mean_predicted > mean_true + 0.05
    assert hard_pm.ece > soft_pm.ece + 0.05
    assert hard_pm.nll > soft_pm.nll
    print(
        f"\nsoft: ece={soft_pm.ece:.4f} mean_pred={soft_pm.mean_predicted:.3f} nll={soft_pm.nll:.4f}"
        f"\nhard: ece={hard_pm.ece:.4f} mean_pred={hard_pm.mean_predicted:.3f} nll={hard_pm.nll:.4f}"
        f"\ntrue: mean_p={mean_true:.3f} entropy={entropy:.4f}"
    )


def test_evaluate_pm_on_other_rows(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path, tiny_pm: Callable[..., Any]
) -> None:
    rows = synthetic_rows(24, seed=6)
    trainer = PMTrainer(
        tiny_pm(tokenizer),
        PMConfig(max_steps=1).training_args(tmp_path),
        train_dataset=preference_dataset(rows[:16]),
        processing_class=tokenizer,
    )
    evaluation = evaluate_pm(trainer, rows[16:])
    assert evaluation.n == 8
    assert evaluation.mean_label == pytest.approx(
        sum(r["chosen_probability"] for r in rows[16:]) / 8
    )
    assert set(evaluation.metrics()) == {
        "eval_n",
        "eval_accuracy",
        "eval_nll",
        "eval_ece",
        "eval_mean_predicted",
        "eval_mean_label",
    }
