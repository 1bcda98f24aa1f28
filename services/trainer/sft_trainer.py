"""Supervised fine-tuning (SL-CAI) on Charter's SFT rows with TRL's ``SFTTrainer``, unchanged.

The rows are TRL's conversational prompt/completion format (``prompt``: the
conversation, ``completion``: the final revision as an assistant message), so
they go to ``SFTTrainer`` as exported, minus the provenance columns. TRL applies
the chat template and, by default, puts the loss on the completion only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from trl import SFTTrainer

from services.trainer.sft_config import SFTConfig
from services.trainer.trl_training import (
    Report,
    Rows,
    TrainResult,
    rows_dataset,
    train_and_save,
    trainer_callbacks,
)

COLUMNS = ("prompt", "completion")
"""What SFT reads from a row; provenance columns are dropped."""


@dataclass(frozen=True)
class SFTResult(TrainResult):
    """The saved SFT model (``output_dir``), its config hash, final step and metrics."""


def train_sft(
    model_or_path: str | Path | PreTrainedModel,
    train_rows: Rows,
    eval_rows: Rows | None,
    config: SFTConfig,
    output_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    report: Report | None = None,
    callbacks: list[TrainerCallback] | None = None,
    resume_from_checkpoint: str | None = None,
) -> SFTResult:
    """Fine-tune a causal LM on SFT rows, evaluate it on ``eval_rows``, save it to ``output_dir``.

    ``model_or_path``: a model directory or a causal-LM instance. ``tokenizer``
    defaults to the one in the model directory and needs a chat template.
    """
    output_dir = Path(output_dir)
    model = str(model_or_path) if isinstance(model_or_path, str | Path) else model_or_path
    eval_dataset = None if eval_rows is None else rows_dataset(eval_rows, COLUMNS, COLUMNS)
    trainer = SFTTrainer(
        model=model,
        args=config.training_args(output_dir, evaluate=eval_dataset is not None),
        train_dataset=rows_dataset(train_rows, COLUMNS, COLUMNS),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=trainer_callbacks(callbacks, report),
    )
    return train_and_save(
        trainer,
        "sft",
        config,
        output_dir,
        SFTResult,
        evaluate=eval_dataset is not None,
        resume_from_checkpoint=resume_from_checkpoint,
    )
