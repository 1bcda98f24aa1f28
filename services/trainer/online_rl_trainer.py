"""RLOO and GRPO with TRL's trainers, rewarded by Charter's preference model.

TRL samples ``num_generations`` completions per prompt and compares each with the rest
of its group, so no value model is trained (the difference from PPO). The reward is a
plain function of the texts: :func:`preference_reward` turns the PM of a finished PM run
into one, scoring each completion exactly as the PPO trainer does (``pm_reward``); the
tests use an exact function instead. The KL reference is the starting policy, which TRL
loads again from the model directory when ``beta`` > 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase, TrainerCallback
from trl import GRPOTrainer, RLOOTrainer

from services.trainer.online_rl_config import GRPOConfig, OnlineRLConfig
from services.trainer.ppo_trainer import RewardFn
from services.trainer.trl_training import (
    Report,
    Rows,
    TrainResult,
    rows_dataset,
    train_and_save,
    trainer_callbacks,
)

COLUMNS = ("prompt",)
"""What the online trainers read from a row: the prompt; completions are sampled."""

TextReward = Callable[..., list[float]]
"""TRL's reward function: ``reward(prompts=..., completions=..., **columns) -> scores``."""


def _text(value: str | Sequence[dict[str, Any]], role: str) -> str:
    """A plain prompt or completion as is; of a conversation, the last ``role`` turn."""
    if isinstance(value, str):
        return value
    turns = [m["content"] for m in value if m.get("role") == role]
    if not turns:
        raise ValueError(f"a conversation without a {role} turn: {value!r}")
    return str(turns[-1])


def text_reward(score: RewardFn, name: str = "preference_model") -> TextReward:
    """TRL's reward function from a Charter :data:`RewardFn` (user prompt, response
    text): conversational prompts give their last user turn, completions their text."""

    def reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        texts = [_text(p, "user") for p in prompts]
        responses = [_text(c, "assistant") for c in completions]
        return [float(s) for s in score(texts, responses)]

    reward.__name__ = name  # TRL names the reward's metrics after it
    return reward


@dataclass(frozen=True)
class OnlineRLResult(TrainResult):
    """The saved policy (``output_dir``), its config hash, final step and metrics."""


def train_online_rl(
    model_path: str | Path,
    rows: Rows,
    reward: TextReward,
    config: OnlineRLConfig,
    output_dir: str | Path,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    report: Report | None = None,
    callbacks: list[TrainerCallback] | None = None,
    resume_from_checkpoint: str | None = None,
) -> OnlineRLResult:
    """Train the causal LM in ``model_path`` with RLOO or GRPO (by ``config``'s type) on
    the prompts of ``rows``, save it to ``output_dir``.

    ``model_path`` is a directory, not a model instance: TRL loads the KL reference from
    it. ``tokenizer`` defaults to the directory's; conversational prompts need its chat
    template.
    """
    output_dir = Path(output_dir)
    trainer_class = GRPOTrainer if isinstance(config, GRPOConfig) else RLOOTrainer
    trainer = trainer_class(
        model=str(model_path),
        reward_funcs=reward,
        args=config.training_args(output_dir),
        train_dataset=rows_dataset(rows, COLUMNS, COLUMNS),
        processing_class=tokenizer,
        callbacks=trainer_callbacks(callbacks, report),
    )
    return train_and_save(
        trainer,
        config.METHOD,
        config,
        output_dir,
        OnlineRLResult,
        evaluate=False,
        resume_from_checkpoint=resume_from_checkpoint,
    )
