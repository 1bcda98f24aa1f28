"""The TRL plumbing of the PM, SFT, DPO, RLOO and GRPO run configs: ``TrainingArguments``
keywords.

The configs themselves (fields, bounds, hash) are :mod:`charter.core.run_configs`,
shared with the gateway, which validates them when a run is submitted. Each
``<method>_config`` module here subclasses its core class only to add
``training_args``, built from :func:`common_args` (or, for the online RL runs, which
hold out no rows, :func:`trainer_args`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from charter.core.run_configs import TrainerArguments, TrainingConfig

__all__ = ["NOT_HASHED", "TrainingConfig", "common_args", "trainer_args"]

NOT_HASHED = TrainingConfig.NOT_HASHED
"""Fields that change how a run is observed, not what it learns."""


def trainer_args(config: TrainerArguments, output_dir: str | Path) -> dict[str, Any]:
    """The ``TrainingArguments`` keywords of :class:`TrainerArguments`' fields.
    Checkpoints (optimizer, scheduler and RNG state included) go to
    ``output_dir/checkpoint-N`` every ``save_steps``."""
    return {
        "output_dir": str(output_dir),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "weight_decay": config.weight_decay,
        "warmup_steps": config.warmup_steps,
        "lr_scheduler_type": config.lr_scheduler_type,
        "max_grad_norm": config.max_grad_norm,
        "seed": config.seed,
        "bf16": config.bf16,
        "activation_checkpointing": config.gradient_checkpointing,  # transformers 5 name
        "logging_steps": config.logging_steps,
        "save_strategy": "steps" if config.save_steps else "no",
        "save_steps": config.save_steps or 500,
        "save_total_limit": 2,
        "report_to": "none",
        "dataloader_pin_memory": torch.cuda.is_available(),  # pinning only helps host-to-GPU
        "disable_tqdm": True,
    }


def common_args(
    config: TrainingConfig, output_dir: str | Path, *, evaluate: bool
) -> dict[str, Any]:
    """:func:`trainer_args` plus the token limit and evaluation of the PM, SFT and DPO
    runs; ``evaluate=False`` when there are no eval rows."""
    return trainer_args(config, output_dir) | {
        "per_device_eval_batch_size": config.per_device_eval_batch_size,
        "max_length": config.max_length,
        "eval_strategy": "steps" if evaluate and config.eval_steps is not None else "no",
        "eval_steps": config.eval_steps,
    }
