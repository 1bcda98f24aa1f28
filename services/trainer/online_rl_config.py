"""The RLOO and GRPO run configs with their TRL arguments (``trl.RLOOConfig``,
``trl.GRPOConfig``).

Fields, bounds and hash: :class:`charter.core.run_configs.RLOOConfig` and
:class:`~charter.core.run_configs.GRPOConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trl

from charter.core import run_configs
from services.trainer.training_config import trainer_args

__all__ = ["GRPOConfig", "OnlineRLConfig", "RLOOConfig"]


def _online_args(config: run_configs.OnlineRLConfig, output_dir: str | Path) -> dict[str, Any]:
    return trainer_args(config, output_dir) | {
        "num_generations": config.num_generations,
        "max_completion_length": config.max_completion_length,
        "temperature": config.temperature,
        "beta": config.beta,
        "epsilon": config.epsilon,
        "num_iterations": config.num_iterations,
        "log_completions": False,
    }


class RLOOConfig(run_configs.RLOOConfig):
    """Hyper-parameters of one RLOO run; stored with the trained model."""

    def training_args(self, output_dir: str | Path) -> trl.RLOOConfig:
        return trl.RLOOConfig(
            **_online_args(self, output_dir), normalize_advantages=self.normalize_advantages
        )


class GRPOConfig(run_configs.GRPOConfig):
    """Hyper-parameters of one GRPO run; stored with the trained model."""

    def training_args(self, output_dir: str | Path) -> trl.GRPOConfig:
        return trl.GRPOConfig(**_online_args(self, output_dir), scale_rewards=self.scale_rewards)


OnlineRLConfig = RLOOConfig | GRPOConfig
