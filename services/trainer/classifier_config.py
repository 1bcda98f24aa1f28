"""The constitutional classifier run config with its ``transformers`` arguments.

Fields, bounds and hash: :class:`charter.core.run_configs.ClassifierConfig`.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainingArguments

from charter.core import run_configs
from services.trainer.training_config import common_args

__all__ = ["ClassifierConfig"]


class ClassifierConfig(run_configs.ClassifierConfig):
    """Hyper-parameters of one classifier run; stored with the trained model."""

    def training_args(self, output_dir: str | Path, *, evaluate: bool = True) -> TrainingArguments:
        """The ``Trainer`` arguments for this run; ``evaluate=False`` when there are no eval
        rows. The trained model is saved by the caller, beside what it reads."""
        args = common_args(self, output_dir, evaluate=evaluate)
        # Plain TrainingArguments has no token limit (TRL's configs add it): the classifier
        # trainer truncates its texts itself, exactly as the scorer does.
        del args["max_length"]
        return TrainingArguments(**args)
