"""What the PM, SFT and DPO trainers share: row handling, the ``report`` hook, the
training record and the result of a run."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from datasets import Dataset
from transformers import (
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from charter.core.run_configs import RunConfig

Rows = Sequence[Mapping[str, Any]] | Dataset
"""Charter's exported rows, as dicts or as a ``datasets.Dataset``."""

Report = Callable[[int, dict[str, float]], None]
"""``report(step, metrics)``: receives every logged set of metrics (the service forwards them)."""

TRAINING_FILE = "charter-training.json"
"""Method, config, config hash and final metrics; written last into the output directory."""


class ReportCallback(TrainerCallback):
    """Forwards every log (training, evaluation, final summary) to ``report(step, metrics)``."""

    def __init__(self, report: Report) -> None:
        self.report = report

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        numbers = {
            k: float(v)
            for k, v in logs.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self.report(state.global_step, numbers)


def trainer_callbacks(
    callbacks: list[TrainerCallback] | None, report: Report | None
) -> list[TrainerCallback]:
    """The caller's ``callbacks``, then a ``ReportCallback`` when there is a ``report``."""
    return [*(callbacks or []), *([ReportCallback(report)] if report else [])]


def rows_dataset(rows: Rows, columns: Sequence[str], required: Sequence[str]) -> Dataset:
    """``rows`` reduced to the ``columns`` a trainer reads: provenance is dropped (before
    the conversion, so its types never matter)."""
    if isinstance(rows, Dataset):
        dataset = rows
    else:
        dataset = Dataset.from_list([{c: r[c] for c in columns if c in r} for r in rows])
    missing = set(required) - set(dataset.column_names)
    if missing:
        raise ValueError(f"rows need columns {sorted(missing)}")
    return dataset.select_columns([c for c in columns if c in dataset.column_names])


def write_training_record(
    output_dir: Path, method: str, config: RunConfig, global_step: int, **results: Any
) -> None:
    """Write ``charter-training.json`` last: its presence marks a finished model directory."""
    record = {
        "method": method,
        "config": config.as_dict(),
        "config_hash": config.config_hash(),
        "global_step": global_step,
        **results,
    }
    (output_dir / TRAINING_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class TrainResult:
    output_dir: Path
    """The saved model directory (weights, config, tokenizer, ``charter-training.json``)."""
    config_hash: str
    global_step: int
    metrics: dict[str, float]
    """Training summary (``train_loss``, ``train_samples_per_second``, ...) and ``eval_*``."""


R = TypeVar("R", bound=TrainResult)


def train_and_save(
    trainer: Trainer,
    method: str,
    config: RunConfig,
    output_dir: Path,
    result_type: type[R],
    *,
    evaluate: bool,
    resume_from_checkpoint: str | None = None,
) -> R:
    """Train, evaluate when there are eval rows (the evaluation is also logged, so a
    ``report`` receives it), save the model and write the training record."""
    result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    metrics = {k: float(v) for k, v in result.metrics.items()}
    if evaluate:
        metrics |= trainer.evaluate()
    trainer.save_model(str(output_dir))
    step = trainer.state.global_step
    if trainer.is_world_process_zero():  # one writer under several processes
        write_training_record(output_dir, method, config, step, metrics=metrics)
    return result_type(output_dir, config.config_hash(), step, metrics)
