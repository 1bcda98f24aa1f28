"""Configuration of a preference-model (PM) run: hyper-parameters and their hash.

The PM scores a conversation with one scalar reward. It learns from Charter's
preference rows with the soft cross-entropy on the AI feedback label
``chosen_probability`` (Bai et al. 2022, §4.1: the feedback model's normalised
probabilities are used as soft targets). ``soft_labels=False`` trains on the hard
labels instead (``p = 1``), which is TRL's ``RewardTrainer`` loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trl import RewardConfig

from services.trainer.training_config import NOT_HASHED, TrainingConfig

__all__ = ["NOT_HASHED", "PMConfig"]


@dataclass(frozen=True)
class PMConfig(TrainingConfig):
    """Hyper-parameters of one preference-model run; stored with the trained model."""

    METHOD = "pm"

    learning_rate: float = 1e-5
    """Peak AdamW learning rate (conservative for a full fine-tune)."""
    per_device_train_batch_size: int = 8
    """Preference pairs per device and step (each pair is two sequences)."""
    max_length: int | None = 1024
    """Pairs with a longer chosen or rejected sequence (in tokens) are dropped; None keeps all."""
    seed: int = 42
    """Seed for the score head's initialisation, the data order and dropout."""
    per_device_eval_batch_size: int = 8
    """Pairs per device in evaluation."""
    soft_labels: bool = True
    """Train on ``chosen_probability``; False trains as if every label were 1 (hard labels)."""
    center_rewards_coefficient: float | None = None
    """Weight of the mean-zero reward penalty (Eisenstein et al. 2023); None disables it."""

    def validate_method_fields(self) -> None:
        if self.center_rewards_coefficient is not None and self.center_rewards_coefficient < 0.0:
            raise ValueError("center_rewards_coefficient must be >= 0 or None")

    def training_args(self, output_dir: str | Path, *, evaluate: bool = True) -> RewardConfig:
        """The TRL arguments for this run; ``evaluate=False`` when there are no eval rows.
        Checkpoints are not saved: the caller saves the result."""
        return RewardConfig(
            **self.common_args(output_dir, evaluate=evaluate),
            center_rewards_coefficient=self.center_rewards_coefficient,
        )
