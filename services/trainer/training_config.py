"""Fields, validation, hash and TRL plumbing shared by the PM, SFT and DPO run configs.

Each run config subclasses ``TrainingConfig``: it may redeclare a shared field to
change its default or describe it for its method, adds its own fields, names its
method (part of the hash) and builds its TRL arguments from ``common_args``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Self

import torch

from charter.core.constitution import canonical_json

NOT_HASHED = frozenset({"per_device_eval_batch_size", "logging_steps", "eval_steps", "save_steps"})
"""Fields that change how a run is observed, not what it learns."""


@dataclass(frozen=True)
class TrainingConfig:
    """TrainingArguments-style hyper-parameters common to the PM, SFT and DPO runs."""

    METHOD: ClassVar[str]
    """The run method (``pm``, ``sft``, ``dpo``); part of the hash."""

    learning_rate: float = 1e-5
    """Peak AdamW learning rate."""
    num_train_epochs: float = 1.0
    """Passes over the training rows; ignored when ``max_steps`` is set."""
    max_steps: int = -1
    """Optimizer steps to run; -1 means ``num_train_epochs`` decides."""
    per_device_train_batch_size: int = 8
    """Rows per device and micro-batch."""
    gradient_accumulation_steps: int = 1
    """Micro-batches accumulated into one optimizer step."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    warmup_steps: float = 0.0
    """Linear warm-up: a step count (>= 1) or a fraction of all steps (< 1)."""
    lr_scheduler_type: str = "linear"
    """Learning-rate schedule after warm-up (a ``transformers`` scheduler name)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    max_length: int | None = 1024
    """Token limit of a row; None keeps all."""
    seed: int = 42
    """Seed for the data order and dropout."""
    bf16: bool = False
    """bfloat16 mixed precision (needs hardware support)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, about 20% slower."""
    per_device_eval_batch_size: int = 8
    """Rows per device in evaluation."""
    logging_steps: int = 10
    """Optimizer steps between two metric reports."""
    eval_steps: int | None = None
    """Evaluate on the held-out rows every this many steps; None evaluates at the end only."""
    save_steps: int | None = None
    """Save a resumable checkpoint every this many steps (the last two are kept); None saves none."""

    def __post_init__(self) -> None:
        if not 0.0 < self.learning_rate <= 1.0:
            raise ValueError("learning_rate must be in (0, 1]")
        if self.max_steps == -1 and not self.num_train_epochs > 0:
            raise ValueError("num_train_epochs must be > 0 when max_steps is -1")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("max_steps must be -1 or >= 1")
        for name in (
            "per_device_train_batch_size",
            "per_device_eval_batch_size",
            "gradient_accumulation_steps",
            "logging_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.weight_decay < 0.0:
            raise ValueError("weight_decay must be >= 0")
        if self.warmup_steps < 0.0:
            raise ValueError("warmup_steps must be >= 0")
        if self.max_grad_norm <= 0.0:
            raise ValueError("max_grad_norm must be > 0")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError("max_length must be >= 2 or None")
        self.validate_method_fields()
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError("eval_steps must be >= 1 or None")
        if self.save_steps is not None and self.save_steps < 1:
            raise ValueError("save_steps must be >= 1 or None")

    def validate_method_fields(self) -> None:
        """Checks of a subclass's own fields; raise ``ValueError`` on a bad value."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Self:
        """Build from stored JSON; unknown keys are an error, not silently dropped."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
        return cls(**values)

    def compute_hash(self) -> str:
        """Hash of every field that affects the trained weights."""
        hashed = {k: v for k, v in self.as_dict().items() if k not in NOT_HASHED}
        return hashlib.sha256(
            canonical_json({"method": self.METHOD, **hashed}).encode()
        ).hexdigest()[:16]

    def common_args(self, output_dir: str | Path, *, evaluate: bool) -> dict[str, Any]:
        """The TRL/``TrainingArguments`` keywords of the shared fields; ``evaluate=False``
        when there are no eval rows. Checkpoints (optimizer, scheduler and RNG state
        included) go to ``output_dir/checkpoint-N`` every ``save_steps``."""
        return {
            "output_dir": str(output_dir),
            "learning_rate": self.learning_rate,
            "num_train_epochs": self.num_train_epochs,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": self.per_device_train_batch_size,
            "per_device_eval_batch_size": self.per_device_eval_batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "weight_decay": self.weight_decay,
            "warmup_steps": self.warmup_steps,
            "lr_scheduler_type": self.lr_scheduler_type,
            "max_grad_norm": self.max_grad_norm,
            "max_length": self.max_length,
            "seed": self.seed,
            "bf16": self.bf16,
            "activation_checkpointing": self.gradient_checkpointing,  # transformers 5 name
            "logging_steps": self.logging_steps,
            "eval_strategy": "steps" if evaluate and self.eval_steps is not None else "no",
            "eval_steps": self.eval_steps,
            "save_strategy": "steps" if self.save_steps else "no",
            "save_steps": self.save_steps or 500,
            "save_total_limit": 2,
            "report_to": "none",
            "dataloader_pin_memory": torch.cuda.is_available(),  # pinning only helps host-to-GPU
            "disable_tqdm": True,
        }
