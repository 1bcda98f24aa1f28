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
"""TRL's DPO losses (its ``sft`` term is left out: it ignores the rejected response)."""


class DPOConfig(run_configs.DPOConfig):
    """Hyper-parameters of one DPO run; stored with the trained model."""

    def training_args(self, output_dir: str | Path, *, evaluate: bool = True) -> trl.DPOConfig:
        """The TRL arguments for this run; ``evaluate=False`` when there are no eval rows.
        Checkpoints are not saved: the caller saves the result."""
        return trl.DPOConfig(
            **common_args(self, output_dir, evaluate=evaluate),
            beta=self.beta,
            loss_type=[self.loss_type],
        )
