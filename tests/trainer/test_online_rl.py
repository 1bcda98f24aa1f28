"""RLOO and GRPO through TRL: configs, the reward adapter, and both learning the exact
reward of the PPO proof (the share of 'a' characters in an 8-token response).

Tiny models from a config and the character tokenizer of test_ppo.py; nothing is
downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from services.trainer.online_rl_config import GRPOConfig, RLOOConfig
from services.trainer.online_rl_trainer import text_reward, train_online_rl
from services.trainer.ppo_trainer import pm_reward
from services.trainer.trl_training import TRAINING_FILE
from tests.trainer.test_ppo import PROMPTS, char_tokenizer, tiny_config, tiny_policy

os.environ.setdefault("HF_HUB_OFFLINE", "1")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny Llama and the character tokenizer, saved (TRL loads the reference
    from the directory)."""
    path = tmp_path_factory.mktemp("policy")
    tokenizer = char_tokenizer()
    tiny_policy(0, len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def share_of_a(_prompts: list[str], responses: list[str]) -> torch.Tensor:
    return torch.tensor([r.count("a") / 8 for r in responses])


# --------------------------------------------------------------------------- configs


@pytest.mark.parametrize("config_class", [RLOOConfig, GRPOConfig])
def test_configs_validate_hash_and_build_trl_arguments(config_class: Any, tmp_path: Path) -> None:
    config = config_class(per_device_train_batch_size=8, num_generations=4, beta=0.1)
    args = config.training_args(tmp_path)
    assert (args.num_generations, args.beta, args.per_device_train_batch_size) == (4, 0.1, 8)
    assert config.config_hash() != config_class(beta=0.2).config_hash()
    assert config.config_hash() == config_class(beta=0.1, logging_steps=1).config_hash()
    with pytest.raises(ValidationError, match="num_generations"):
        config_class(per_device_train_batch_size=6, num_generations=4)
    # accumulation makes up the group: 2 completions x 2 micro-batches for groups of 4
    assert config_class(per_device_train_batch_size=2, gradient_accumulation_steps=2)
    assert RLOOConfig().config_hash() != GRPOConfig().config_hash()


def test_text_reward_scores_what_ppo_scores() -> None:
    """The adapter gives TRL the PPO trainer's reward: the last user turn and the
    completion's text, for plain and conversational rows alike."""
    tokenizer = char_tokenizer()
    torch.manual_seed(3)
    config = tiny_config(len(tokenizer))
    config.num_labels = 1
    from transformers import LlamaForSequenceClassification

    score = pm_reward(LlamaForSequenceClassification(config), tokenizer)
    reward = text_reward(score)
    plain = reward(prompts=["hello", "ab"], completions=["a cat", "zz"])
    chat = reward(
        prompts=[
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}],
            [{"role": "user", "content": "ab"}],
        ],
        completions=[
            [{"role": "assistant", "content": "a cat"}],
            [{"role": "assistant", "content": "zz"}],
        ],
    )
    expected = score(["hello", "ab"], ["a cat", "zz"]).tolist()
    assert plain == pytest.approx(expected) and chat == pytest.approx(expected)
    assert reward.__name__ == "preference_model"
    with pytest.raises(ValueError, match="user turn"):
        reward(prompts=[[{"role": "system", "content": "x"}]], completions=["a"])


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("config_class", [RLOOConfig, GRPOConfig])
def test_learns_the_exact_reward(config_class: Any, policy_dir: Path, tmp_path: Path) -> None:
    """From a random policy (about 1 'a' in 31 tokens, score ~0.03) both raise the
    score several times over in 100 steps, with a KL that grows from zero."""
    config = config_class(
        learning_rate=1e-3,
        max_steps=100,
        per_device_train_batch_size=32,
        num_generations=8,
        max_completion_length=8,
        beta=0.05,
        lr_scheduler_type="constant",
        logging_steps=10,
        seed=0,
    )
    reports: list[tuple[int, dict[str, float]]] = []
    result = train_online_rl(
        policy_dir,
        [{"prompt": p} for p in PROMPTS * 100],
        text_reward(share_of_a, "share_of_a"),
        config,
        tmp_path / "out",
        report=lambda step, metrics: reports.append((step, metrics)),
    )
    scores = [(step, m["reward"]) for step, m in reports if "reward" in m]
    assert [s for s, _ in scores] == list(range(10, 101, 10))
    first, last = scores[0][1], scores[-1][1]
    assert first < 0.1 and last > 0.25 and last > 3 * first, scores
    kls = [m["kl"] for _, m in reports if "kl" in m]
    assert kls[0] < kls[-1]
    assert "rewards/share_of_a/mean" in reports[0][1]
    record = json.loads((result.output_dir / TRAINING_FILE).read_text())
    assert record["method"] == config.METHOD and record["global_step"] == 100
    assert record["config_hash"] == config.config_hash() == result.config_hash
    assert (result.output_dir / "config.json").is_file()
