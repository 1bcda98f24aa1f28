"""Configuration of a DPO run: hyper-parameters and their hash.

DPO (Rafailov et al. 2023) trains the policy directly on Charter's preference rows,
an alternative to the PM + PPO route of RL-CAI. The reference policy is a frozen
copy of the starting model. Rows are treated as hard preferences (TRL's DPO loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trl

from services.trainer.training_config import NOT_HASHED, TrainingConfig

__all__ = ["LOSS_TYPES", "NOT_HASHED", "DPOConfig"]

LOSS_TYPES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
)
"""TRL's DPO losses (its ``sft`` term is left out: it ignores the rejected response)."""


@dataclass(frozen=True)
class DPOConfig(TrainingConfig):
    """Hyper-parameters of one DPO run; stored with the trained model."""

    METHOD = "dpo"

    learning_rate: float = 1e-6
    """Peak AdamW learning rate (TRL's DPO default)."""
    per_device_train_batch_size: int = 8
    """Preference pairs per device and micro-batch."""
    max_length: int | None = 1024
    """Prompt + response is truncated to this many tokens (keeping the start); None keeps all."""
    per_device_eval_batch_size: int = 8
    """Preference pairs per device in evaluation."""
    beta: float = 0.1
    """Strength of the implicit KL penalty towards the reference; higher stays closer."""
    loss_type: str = "sigmoid"
    """One of ``LOSS_TYPES``; ``sigmoid`` is the DPO paper's loss."""

    def validate_method_fields(self) -> None:
        if self.beta <= 0.0:
            raise ValueError("beta must be > 0")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}")

    def training_args(self, output_dir: str | Path, *, evaluate: bool = True) -> trl.DPOConfig:
        """The TRL arguments for this run; ``evaluate=False`` when there are no eval rows.
        Checkpoints are not saved: the caller saves the result."""
        return trl.DPOConfig(
            **self.common_args(output_dir, evaluate=evaluate),
            beta=self.beta,
            loss_type=[self.loss_type],
        )
