"""The DPO run config with its TRL arguments (``trl.DPOConfig``).

Fields, bounds and hash: :class:`charter.core.run_configs.DPOConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import trl

from charter.core import run_configs
from services.trainer.training_config import NOT_HASHED, common_args

__all__ = ["LOSS_TYPES", "NOT_HASHED", "DPOConfig"]

LOSS_TYPES: tuple[str, ...] = get_args(run_configs.DPOLossType)
"""TRL's DPO losses (without its ``sft`` term) and Charter's ``soft`` (``soft_dpo.py``)."""


class DPOConfig(run_configs.DPOConfig):
    """Hyper-parameters of one DPO run; stored with the trained model."""

    @property
    def soft_labels(self) -> bool:
        """Whether rows train towards their ``chosen_probability`` (``loss_type="soft"``)."""
        return self.loss_type == "soft"

    def training_args(self, output_dir: str | Path, *, evaluate: bool = True) -> trl.DPOConfig:
        """The TRL arguments for this run; ``evaluate=False`` when there are no eval rows.
        Checkpoints are not saved: the caller saves the result."""
        return trl.DPOConfig(
            **common_args(self, output_dir, evaluate=evaluate),
            beta=self.beta,
            # The soft loss replaces TRL's sigmoid loss in SoftDPOTrainer.
            loss_type=["sigmoid" if self.soft_labels else self.loss_type],
        )
