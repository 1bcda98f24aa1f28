"""The preference-model (PM) run config with its TRL arguments (``RewardConfig``).

Fields, bounds and hash: :class:`charter.core.run_configs.PMConfig`.
"""

from __future__ import annotations

from pathlib import Path

from trl import RewardConfig

from charter.core import run_configs
from services.trainer.training_config import NOT_HASHED, common_args

__all__ = ["NOT_HASHED", "PMConfig"]


class PMConfig(run_configs.PMConfig):
    """Hyper-parameters of one preference-model run; stored with the trained model."""

    def training_args(self, output_dir: str | Path, *, evaluate: bool = True) -> RewardConfig:
        """The TRL arguments for this run; ``evaluate=False`` when there are no eval rows.
        Checkpoints are not saved: the caller saves the result."""
        return RewardConfig(
            **common_args(self, output_dir, evaluate=evaluate),
            center_rewards_coefficient=self.center_rewards_coefficient,
        )
