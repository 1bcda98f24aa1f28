"""The PPO run config: :class:`charter.core.run_configs.PPOConfig`, re-exported.

PPO is Charter's own trainer (``ppo_trainer``), which reads the config directly:
there are no TRL arguments to build.
"""

from __future__ import annotations

from charter.core.run_configs import PPOConfig

__all__ = ["PPOConfig"]
