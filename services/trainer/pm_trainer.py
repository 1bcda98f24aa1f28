"""Preference-model (PM) training on soft AI-feedback labels, on top of TRL's RewardTrainer.

A PM maps a conversation to one scalar reward ``r``. For a pair the margin is
``d = r_chosen - r_rejected`` and the model's probability that ``chosen`` is better
is ``sigmoid(d)``. Charter's preference rows carry the feedback model's soft label
``p = chosen_probability``, and the PM is fitted with the soft cross-entropy

    loss = -(p * logsigmoid(d) + (1 - p) * logsigmoid(-d))

whose minimiser is ``sigmoid(d) = p``: the PM learns how sure the feedback was,
not just who won. ``p = 1`` is TRL's hard loss ``-logsigmoid(d)``, which keeps
pushing ``d`` up on every pair and so makes an over-confident PM.

TRL does the tokenisation (chat template over ``prompt + chosen`` and
``prompt + rejected``), padding, the forward pass and its metrics. This module
only (1) carries ``chosen_probability`` through the collator, (2) swaps the loss
and (3) adds held-out calibration: accuracy, soft-label NLL, expected calibration
error and a reliability table. The row handling, the ``report`` hook and the
training record come from ``services.trainer.trl_training``, shared with SFT and DPO.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch.nn import functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl import RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference

from services.trainer.pm_config import PMConfig
from services.trainer.trl_training import (
    Report,
    Rows,
    TrainResult,
    rows_dataset,
    trainer_callbacks,
    write_training_record,
)

LABEL = "chosen_probability"
COLUMNS = ("prompt", "chosen", "rejected", LABEL)
"""What the PM reads from a row; provenance columns are dropped."""


def soft_preference_loss(margin: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy between the soft label ``p`` and ``sigmoid(margin)``."""
    return -(p * F.logsigmoid(margin) + (1.0 - p) * F.logsigmoid(-margin)).mean()


@dataclass
class SoftPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator, plus one ``chosen_probability`` per pair when rows have it."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().torch_call(examples)
        if LABEL in examples[0]:
            batch[LABEL] = torch.tensor([e[LABEL] for e in examples], dtype=torch.float)
        return batch


class PMTrainer(RewardTrainer):
    """``RewardTrainer`` with the soft-label loss. Rows without ``chosen_probability`` train
    exactly as in TRL (hard labels)."""

    _tag_names = ["trl", "reward-trainer", "charter-soft-labels"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # TRL builds its default collator once the pad token is settled; upgrade that one
        # (a collator the caller passed is kept as is).
        if type(self.data_collator) is DataCollatorForPreference:
            self.data_collator = SoftPreferenceCollator(
                pad_token_id=self.data_collator.pad_token_id,
                pad_to_multiple_of=self.data_collator.pad_to_multiple_of,
            )

    def _set_signature_columns_if_needed(self) -> None:
        # Keep the label column when Trainer drops the columns the model does not use.
        super()._set_signature_columns_if_needed()
        if LABEL not in self._signature_columns:
            self._signature_columns = [*self._signature_columns, LABEL]

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        p = inputs.pop(LABEL, None)  # the model's forward must not see it
        # TRL runs the forward pass and records its metrics (rewards, accuracy, margin).
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if p is not None:
            rewards_chosen, rewards_rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            margin = rewards_chosen - rewards_rejected
            if "margin" in inputs:  # TRL's optional per-pair offset, applied as TRL does
                margin = margin - inputs["margin"]
            loss = soft_preference_loss(margin, p)
            coefficient = self.args.center_rewards_coefficient
            if coefficient is not None:  # same regulariser TRL adds to its hard loss
                loss = loss + coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)
            with torch.no_grad():
                # > 0: the PM is surer than the labels (what hard labels cause).
                gap = (torch.sigmoid(margin) - p).mean()
                gap = self.accelerator.gather_for_metrics(gap).mean().item()
                self._metrics["train" if self.model.training else "eval"]["confidence_gap"].append(
                    gap
                )
        return (loss, outputs) if return_outputs else loss

    @torch.no_grad()
    def preference_margins(
        self, dataset: Dataset | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(d, p)`` for every pair of ``dataset`` (default: the eval dataset), in order.

        Rows go through the same tokenisation, length filter and collator as in
        training. ``p`` is 1 for rows without a soft label.
        """
        if dataset is None:
            dataset = self.eval_dataset  # prepared when the trainer was built
        else:
            dataset = self._prepare_dataset(dataset, self.processing_class, self.args, "eval")
        model = self.model
        was_training = model.training
        model.eval()
        margins, labels = [], []
        for batch in self.get_eval_dataloader(dataset):
            batch = self._prepare_inputs(batch)
            logits = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                use_cache=False,
            ).logits.squeeze(-1)
            rewards_chosen, rewards_rejected = torch.chunk(logits.float(), chunks=2)
            margin = rewards_chosen - rewards_rejected
            p = batch.get(LABEL, torch.ones_like(margin))
            margin, p = self.accelerator.gather_for_metrics((margin, p))
            margins.append(margin.cpu())
            labels.append(p.float().cpu())
        model.train(was_training)
        return torch.cat(margins), torch.cat(labels)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class ReliabilityBin:
    """One row of the reliability table: pairs whose predicted P(chosen) fell in [lower, upper)."""

    lower: float
    upper: float
    count: int
    mean_predicted: float
    """Mean of ``sigmoid(d)`` over the bin."""
    mean_label: float
    """Mean soft label ``p`` over the bin; equal to ``mean_predicted`` when calibrated."""


@dataclass(frozen=True)
class PMEvaluation:
    """Held-out quality of a PM against soft labels."""

    n: int
    """Pairs scored (after the ``max_length`` filter)."""
    accuracy: float
    """Fraction with predicted P(chosen) > 0.5."""
    nll: float
    """Mean soft-label cross-entropy (the training loss, without regularisers), in nats."""
    ece: float
    """Expected calibration error: bin-weighted mean of |mean predicted - mean label|."""
    mean_predicted: float
    """Mean predicted P(chosen); far above ``mean_label`` means over-confident."""
    mean_label: float
    """Mean soft label."""
    reliability: tuple[ReliabilityBin, ...]
    """Non-empty bins, in order."""

    def metrics(self, prefix: str = "eval_") -> dict[str, float]:
        """Flat scalar metrics, e.g. for ``report``."""
        values = {
            "n": float(self.n),
            "accuracy": self.accuracy,
            "nll": self.nll,
            "ece": self.ece,
            "mean_predicted": self.mean_predicted,
            "mean_label": self.mean_label,
        }
        return {f"{prefix}{k}": v for k, v in values.items()}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration(
    predicted: torch.Tensor, label: torch.Tensor, bins: int = 10
) -> tuple[float, tuple[ReliabilityBin, ...]]:
    """ECE and reliability table of ``predicted`` probabilities against soft ``label``s.

    ``bins`` equal-width bins over [0, 1]. Labels are probabilities, not 0/1
    outcomes, so each bin compares mean prediction with mean label directly and the
    ECE carries no outcome-sampling noise.
    """
    if predicted.numel() == 0:
        raise ValueError("nothing to evaluate: no pairs")
    if bins < 1:
        raise ValueError("bins must be >= 1")
    index = torch.clamp((predicted * bins).long(), 0, bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        in_bin = index == b
        count = int(in_bin.sum())
        if count == 0:
            continue
        mean_predicted = predicted[in_bin].mean().item()
        mean_label = label[in_bin].mean().item()
        ece += count / predicted.numel() * abs(mean_predicted - mean_label)
        table.append(ReliabilityBin(b / bins, (b + 1) / bins, count, mean_predicted, mean_label))
    return ece, tuple(table)


def evaluate_pm(trainer: PMTrainer, rows: Rows | None = None, *, bins: int = 10) -> PMEvaluation:
    """Accuracy, soft-label NLL and calibration of ``trainer``'s model on ``rows``
    (default: its eval dataset)."""
    dataset = None if rows is None else preference_dataset(rows)
    margin, p = trainer.preference_margins(dataset)
    predicted = torch.sigmoid(margin)
    ece, table = calibration(predicted, p, bins)
    return PMEvaluation(
        n=margin.numel(),
        accuracy=(predicted > 0.5).float().mean().item(),
        nll=soft_preference_loss(margin, p).item(),
        ece=ece,
        mean_predicted=predicted.mean().item(),
        mean_label=p.mean().item(),
        reliability=table,
    )


# --------------------------------------------------------------------------- entry point


def preference_dataset(rows: Rows, *, soft_labels: bool = True) -> Dataset:
    """The PM's columns of ``rows``; without ``soft_labels`` the label is dropped (hard loss)."""
    if isinstance(rows, Dataset) and "chosen_ids" in rows.column_names:
        return rows  # already tokenised by TRL
    columns = COLUMNS if soft_labels else tuple(c for c in COLUMNS if c != LABEL)
    dataset = rows_dataset(rows, columns, required=("chosen", "rejected"))
    if LABEL in dataset.column_names:
        bad = [p for p in dataset[LABEL] if p is None or not 0.0 <= p <= 1.0 or math.isnan(p)]
        if bad:
            raise ValueError(f"{LABEL} must be in [0, 1]; got {bad[:3]}")
    return dataset


@dataclass(frozen=True)
class PMResult(TrainResult):
    evaluation: PMEvaluation | None
    """Held-out calibration; None without eval rows."""


def train_pm(
    model_or_path: str | Path | PreTrainedModel,
    train_rows: Rows,
    eval_rows: Rows | None,
    config: PMConfig,
    output_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    report: Report | None = None,
    callbacks: list[TrainerCallback] | None = None,
    resume_from_checkpoint: str | None = None,
) -> PMResult:
    """Train a PM on Charter's preference rows, evaluate it, save it to ``output_dir``.

    ``model_or_path``: a model directory (loaded as a sequence classifier with one
    label; a causal-LM checkpoint gets a new score head) or a model with
    ``num_labels=1``. ``tokenizer`` defaults to the one in the model directory.
    Eval rows keep their soft labels even when ``config.soft_labels`` is False, so
    soft and hard PMs are measured against the same targets.
    """
    output_dir = Path(output_dir)
    model = str(model_or_path) if isinstance(model_or_path, str | Path) else model_or_path
    eval_dataset = None if eval_rows is None else preference_dataset(eval_rows)
    trainer = PMTrainer(
        model=model,
        args=config.training_args(output_dir, evaluate=eval_dataset is not None),
        train_dataset=preference_dataset(train_rows, soft_labels=config.soft_labels),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=trainer_callbacks(callbacks, report),
    )
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    metrics = {k: float(v) for k, v in result.metrics.items()}
    evaluation = None
    if eval_dataset is not None:
        evaluation = evaluate_pm(trainer)
        metrics |= evaluation.metrics()
        if report is not None:
            report(trainer.state.global_step, evaluation.metrics())
    trainer.save_model(str(output_dir))
    step = trainer.state.global_step
    if trainer.is_world_process_zero():  # one writer under several processes
        write_training_record(
            output_dir,
            "pm",
            config,
            step,
            metrics=metrics,
            evaluation=None if evaluation is None else evaluation.as_dict(),
        )
    return PMResult(output_dir, config.config_hash(), step, metrics, evaluation)
