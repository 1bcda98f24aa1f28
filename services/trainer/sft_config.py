"""The supervised fine-tuning (SFT) run config with its TRL arguments (``trl.SFTConfig``).

Fields, bounds and hash: :class:`charter.core.run_configs.SFTConfig`. TRL's
``SFTTrainer`` trains on Charter's SFT rows as exported.
"""

from __future__ import annotations

from pathlib import Path

import trl

from charter.core import run_configs
from services.trainer.training_config import NOT_HASHED, common_args

__all__ = ["NOT_HASHED", "SFTConfig"]


class SFTConfig(run_configs.SFTConfig):
    """Hyper-parameters of one SFT run; stored with the trained model."""

    def training_args(self, output_dir: str | Path, *, evaluate: bool = True) -> trl.SFTConfig:
        """The TRL arguments for this run; ``evaluate=False`` when there are no eval rows.
        Checkpoints are not saved: the caller saves the result."""
        return trl.SFTConfig(
            **common_args(self, output_dir, evaluate=evaluate),
            completion_only_loss=self.completion_only_loss,
        )
