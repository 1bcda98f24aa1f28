"""DPO with soft labels: the loss against hand computation, the trainer's loss against a
plain forward pass (and TRL's own loss at p = 1), and training that stops at p.

Tiny random-initialised Llamas over a word-level tokenizer (conftest.py).
"""

# Heavy imports follow the importorskip guards.
# ruff: noqa: E402
from __future__ import annotations

import json
import math
import os
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
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from services.trainer.dpo_config import DPOConfig
from services.trainer.dpo_trainer import frozen_copy, train_dpo
from services.trainer.soft_dpo import SoftDPOTrainer, soft_dpo_loss
from services.trainer.trl_training import TRAINING_FILE

WORDS = ("system", "user", "assistant", "rate", "this", "answer", "good", "ok", "fine", "so")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer(word_tokenizer: Callable[..., PreTrainedTokenizerFast]) -> PreTrainedTokenizerFast:
    return word_tokenizer(WORDS)


@pytest.fixture(scope="module")
def tiny_lm(tiny_llama: Callable[..., Any]) -> Callable[..., LlamaForCausalLM]:
    return partial(tiny_llama, LlamaForCausalLM, max_position_embeddings=64)


def row(chosen: str, rejected: str, p: float) -> dict[str, Any]:
    return {
        "prompt": [{"role": "user", "content": "rate this answer"}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "chosen_probability": p,
    }


ROWS = [
    row("good good", "ok", 0.6),
    row("fine so good", "so", 0.9),
    row("ok fine", "good ok fine so", 1.0),
    row("so", "fine", 0.5),
]


def args(tmp_path: Path, **overrides: Any) -> trl.DPOConfig:
    values: dict[str, Any] = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": len(ROWS),
        "report_to": "none",
        "bf16": False,
        "activation_checkpointing": False,
        "save_strategy": "no",
        "beta": 0.5,
    } | overrides
    return trl.DPOConfig(**values)


def sigma(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------- the loss


def test_loss_is_the_cross_entropy_against_p() -> None:
    chosen = torch.tensor([0.5, -1.0, 2.0, 0.0])
    rejected = torch.tensor([-0.3, 0.5, -2.0, 0.0])
    p = torch.tensor([0.7, 0.6, 1.0, 0.5])
    got = soft_dpo_loss(chosen, rejected, p, beta=0.5)
    # By hand: x = 0.5 * margin; -p log s(x) - (1 - p) log s(-x).
    for value, x, q in zip(got.tolist(), (0.4, -0.75, 2.0, 0.0), p.tolist(), strict=True):
        expected = -(q * math.log(sigma(x)) + (1 - q) * math.log(sigma(-x)))
        assert value == pytest.approx(expected, abs=1e-6)
    assert got[2].item() == pytest.approx(-math.log(sigma(2.0)), abs=1e-6)  # p = 1: DPO's loss
    assert got[3].item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_loss_is_minimal_where_the_model_preference_equals_p() -> None:
    for p in (0.55, 0.7, 0.95):
        x = torch.tensor([math.log(p / (1 - p))], requires_grad=True)  # sigmoid(x) = p
        soft_dpo_loss(x, torch.zeros(1), torch.tensor([p]), beta=1.0).sum().backward()
        assert x.grad is not None and abs(x.grad.item()) < 1e-6
        # Either side of it the loss is larger.
        at = soft_dpo_loss(x.detach(), torch.zeros(1), torch.tensor([p]), 1.0).item()
        for dx in (-0.3, 0.3):
            near = soft_dpo_loss(x.detach() + dx, torch.zeros(1), torch.tensor([p]), 1.0)
            assert near.item() > at


# --------------------------------------------------------------------------- the trainer


def completion_logp(model: Any, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """log P(completion | prompt) from a plain forward pass and log-softmax."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logps = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
    targets = ids[0, 1:]
    per_token = logps.gather(1, targets[:, None])[:, 0]
    return float(per_token[len(prompt_ids) - 1 :].sum())


def margin(model: Any, reference: Any, example: dict[str, Any]) -> float:
    """DPO's implicit reward margin of a tokenized row, from plain forward passes."""
    prompt, chosen, rejected = example["prompt_ids"], example["chosen_ids"], example["rejected_ids"]
    return (
        completion_logp(model, prompt, chosen)
        - completion_logp(reference, prompt, chosen)
        - completion_logp(model, prompt, rejected)
        + completion_logp(reference, prompt, rejected)
    )


def first_batch_loss(trainer: Any, model: Any) -> tuple[Any, list[dict[str, Any]]]:
    """The trainer's loss on all its (tokenized) training rows as one batch, and the rows."""
    examples = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    return trainer.compute_loss(model, trainer.data_collator(examples)), examples


def test_trainer_loss_matches_a_hand_computed_loss(
    tokenizer: PreTrainedTokenizerFast, tiny_lm: Callable[..., Any], tmp_path: Path
) -> None:
    policy = tiny_lm(tokenizer, seed=0)
    reference = tiny_lm(tokenizer, seed=1).requires_grad_(False).eval()  # differs from the policy
    policy.eval()  # no dropout in either model; the loss is the eval loss
    trainer = SoftDPOTrainer(
        policy,
        ref_model=reference,
        args=args(tmp_path),
        train_dataset=Dataset.from_list(ROWS),
        processing_class=tokenizer,
    )
    loss, examples = first_batch_loss(trainer, policy)

    expected = []
    for example in examples:
        x, p = 0.5 * margin(policy, reference, example), example["chosen_probability"]
        expected.append(-(p * math.log(sigma(x)) + (1 - p) * math.log(sigma(-x))))
    assert abs(expected[0] - math.log(2)) > 1e-3  # the two models really differ
    assert loss.item() == pytest.approx(sum(expected) / len(expected), abs=1e-5)


def test_at_p_one_the_loss_is_trl_sigmoid_loss(
    tokenizer: PreTrainedTokenizerFast, tiny_lm: Callable[..., Any], tmp_path: Path
) -> None:
    hard = [r | {"chosen_probability": 1.0} for r in ROWS]
    policy = tiny_lm(tokenizer, seed=0).eval()
    reference = tiny_lm(tokenizer, seed=1).requires_grad_(False).eval()
    losses = []
    for trainer_class in (SoftDPOTrainer, trl.DPOTrainer):
        trainer = trainer_class(
            policy,
            ref_model=reference,
            args=args(tmp_path),
            train_dataset=Dataset.from_list(hard),
            processing_class=tokenizer,
        )
        losses.append(first_batch_loss(trainer, policy)[0].item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)


def test_trainer_refuses_what_it_would_ignore(
    tokenizer: PreTrainedTokenizerFast, tiny_lm: Callable[..., Any], tmp_path: Path
) -> None:
    model = tiny_lm(tokenizer)
    with pytest.raises(ValueError, match="sigmoid"):
        SoftDPOTrainer(
            model,
            ref_model=frozen_copy(model),
            args=args(tmp_path, loss_type=["ipo"]),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=tokenizer,
        )


def preference(model: Any, reference: Any, example: dict[str, Any], beta: float) -> float:
    """The model's implied P(chosen > rejected): sigmoid(beta * margin)."""
    return sigma(beta * margin(model, reference, example))


@pytest.mark.parametrize(("loss_type", "p"), [("soft", 0.7), ("sigmoid", 0.7)])
def test_soft_training_stops_at_p_where_hard_dpo_runs_past_it(
    loss_type: str,
    p: float,
    tokenizer: PreTrainedTokenizerFast,
    tiny_lm: Callable[..., Any],
    tmp_path: Path,
) -> None:
    rows = [row("good good", "ok", p)] * 4
    model = tiny_lm(tokenizer)
    reference = frozen_copy(model)
    config = DPOConfig(
        loss_type=loss_type,  # type: ignore[arg-type]
        beta=1.0,
        learning_rate=1e-2,
        max_steps=60,
        per_device_train_batch_size=4,
        warmup_steps=0,
        lr_scheduler_type="constant",
    )
    result = train_dpo(model, rows, None, config, tmp_path / "dpo", tokenizer=tokenizer)
    trainer_view = SoftDPOTrainer(
        model.eval(),
        ref_model=reference,
        args=args(tmp_path),
        train_dataset=Dataset.from_list(rows[:1]),
        processing_class=tokenizer,
    )
    final = preference(model, reference, trainer_view.train_dataset[0], beta=1.0)
    if loss_type == "soft":
        assert final == pytest.approx(p, abs=0.03)
    else:
        assert final > 0.95  # hard DPO pushes the margin on and on
    assert result.global_step == 60


def test_train_dpo_soft_on_exported_rows(
    tokenizer: PreTrainedTokenizerFast, tiny_lm: Callable[..., Any], tmp_path: Path
) -> None:
    reports: list[dict[str, float]] = []
    config = DPOConfig(
        loss_type="soft", max_steps=2, per_device_train_batch_size=2, eval_steps=1, logging_steps=1
    )
    result = train_dpo(
        tiny_lm(tokenizer),
        ROWS,
        ROWS[:2],
        config,
        tmp_path / "dpo",
        tokenizer=tokenizer,
        report=lambda _step, metrics: reports.append(metrics),
    )
    logged = {k for metrics in reports for k in metrics}
    assert {"loss", "rewards/probability_gap", "eval_rewards/probability_gap"} <= logged
    record = json.loads((result.output_dir / TRAINING_FILE).read_text())
    assert record["config"]["loss_type"] == "soft"
    # Without the soft label the soft loss cannot run: the error names the column.
    bare = [{k: v for k, v in r.items() if k != "chosen_probability"} for r in ROWS]
    with pytest.raises(ValueError, match="chosen_probability"):
        train_dpo(tiny_lm(tokenizer), bare, None, config, tmp_path / "bare", tokenizer=tokenizer)


def test_soft_config_runs_trl_sigmoid_underneath_and_hashes_apart() -> None:
    soft = DPOConfig(loss_type="soft")
    assert soft.soft_labels and not DPOConfig().soft_labels
    assert soft.training_args("out").loss_type == ["sigmoid"]
    assert soft.config_hash() != DPOConfig().config_hash()
