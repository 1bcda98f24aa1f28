"""Configuration of a supervised fine-tuning (SFT) run: hyper-parameters and their hash.

SL-CAI fine-tunes the policy on the final revisions (Bai et al. 2022, §3): each
SFT row is a conversation ``prompt`` and the revised assistant ``completion``.
TRL's ``SFTTrainer`` trains on such rows as exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trl

from services.trainer.training_config import NOT_HASHED, TrainingConfig

__all__ = ["NOT_HASHED", "SFTConfig"]


@dataclass(frozen=True)
class SFTConfig(TrainingConfig):
    """Hyper-parameters of one SFT run; stored with the trained model."""

    METHOD = "sft"

    learning_rate: float = 2e-5
    """Peak AdamW learning rate (TRL's SFT default)."""
    per_device_train_batch_size: int = 8
    """Sequences per device and micro-batch."""
    max_length: int | None = 1024
    """Sequences are truncated to this many tokens (keeping the start); None keeps all."""
    per_device_eval_batch_size: int = 8
    """Sequences per device in evaluation."""
    completion_only_loss: bool = True
    """Loss on the assistant completion only; False also trains on the prompt tokens."""

    def training_args(self, output_dir: str | Path, *, evaluate: bool = True) -> trl.SFTConfig:
        """The TRL arguments for this run; ``evaluate=False`` when there are no eval rows.
        Checkpoints are not saved: the caller saves the result."""
        return trl.SFTConfig(
            **self.common_args(output_dir, evaluate=evaluate),
            completion_only_loss=self.completion_only_loss,
        )
