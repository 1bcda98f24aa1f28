"""DPO on Charter's preference rows with TRL's ``DPOTrainer``; the reference is a frozen copy.

The rows are TRL's conversational preference format (``prompt``, ``chosen``,
``rejected``). TRL's losses read those three columns: the soft label and the
provenance are dropped, so every row counts as a hard preference. The ``soft``
loss also reads ``chosen_probability`` and trains towards it (``soft_dpo.py``).
The reference policy is a frozen copy of the starting weights, made before TRL
touches the model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TrainerCallback,
)
from trl import DPOTrainer

from services.trainer.dpo_config import DPOConfig
from services.trainer.soft_dpo import PROBABILITY, SoftDPOTrainer
from services.trainer.trl_training import (
    Report,
    Rows,
    TrainResult,
    rows_dataset,
    train_and_save,
    trainer_callbacks,
)

COLUMNS = ("prompt", "chosen", "rejected")
"""What TRL's DPO losses read from a row; ``chosen_probability`` and provenance are dropped."""
SOFT_COLUMNS = (*COLUMNS, PROBABILITY)
"""What the soft loss reads from a row."""


def frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    """An independent, gradient-free copy of ``model`` in eval mode: the DPO reference."""
    reference = copy.deepcopy(model)
    reference.requires_grad_(False)
    return reference.eval()


@dataclass(frozen=True)
class DPOResult(TrainResult):
    """The saved policy (``output_dir``), its config hash, final step and metrics."""


def train_dpo(
    model_or_path: str | Path | PreTrainedModel,
    train_rows: Rows,
    eval_rows: Rows | None,
    config: DPOConfig,
    output_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    report: Report | None = None,
    callbacks: list[TrainerCallback] | None = None,
    resume_from_checkpoint: str | None = None,
) -> DPOResult:
    """Train a causal LM with DPO on preference rows, evaluate it, save it to ``output_dir``.

    ``model_or_path``: a model directory or a causal-LM instance (trained in place).
    ``tokenizer`` defaults to the one in the model directory and needs a chat template.
    """
    output_dir = Path(output_dir)
    if isinstance(model_or_path, str | Path):
        model = AutoModelForCausalLM.from_pretrained(str(model_or_path), dtype=torch.float32)
    else:
        model = model_or_path
    columns = SOFT_COLUMNS if config.soft_labels else COLUMNS
    eval_dataset = None if eval_rows is None else rows_dataset(eval_rows, columns, columns)
    trainer_class = SoftDPOTrainer if config.soft_labels else DPOTrainer
    trainer = trainer_class(
        model=model,
        ref_model=frozen_copy(model),
        args=config.training_args(output_dir, evaluate=eval_dataset is not None),
        train_dataset=rows_dataset(train_rows, columns, columns),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=trainer_callbacks(callbacks, report),
    )
    return train_and_save(
        trainer,
        "dpo",
        config,
        output_dir,
        DPOResult,
        evaluate=eval_dataset is not None,
        resume_from_checkpoint=resume_from_checkpoint,
    )
