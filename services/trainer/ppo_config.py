"""Configuration of the PPO stage of RL-CAI (policy vs preference model, KL-penalised).

Defaults follow Ziegler et al. 2019, Stiennon et al. 2020 and "The N implementation
details of RLHF with PPO" (Huang et al. 2023). Sizes are counted in sequences
(prompt + sampled response); KL values are in nats per sequence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class PPOConfig:
    # --- optimisation
    learning_rate: float = 1e-5  # Adam step size for the policy (language model) weights
    value_head_learning_rate: float | None = None  # value head step size; None = learning_rate
    adam_eps: float = 1e-5  # Adam epsilon; 1e-5 as in the PPO reference code, not torch's 1e-8
    max_grad_norm: float | None = 1.0  # global gradient-norm clip; None disables clipping
    seed: int = 0  # seeds value-head init, sampling and minibatch shuffling

    # --- batch shape
    batch_size: int = 64  # prompts (and sampled responses) per rollout, i.e. per PPO step
    mini_batch_size: int = 16  # sequences per gradient step; must divide batch_size
    ppo_epochs: int = 4  # passes over each rollout, minibatches reshuffled every pass
    total_steps: int = 1000  # PPO steps (rollouts) that train() runs when steps is not given

    # --- sampling
    max_prompt_length: int = 512  # longer prompts keep their last tokens (the generation prompt)
    response_length: int = 64  # most tokens sampled per response (EOS included)
    # Sampling temperature. Keep 1.0 with no top-k/top-p: the sampled tokens must come from
    # exactly the distribution PPO optimises, or the behaviour log-probs are wrong. The
    # trainer divides logits by it both when sampling and when recomputing log-probs.
    temperature: float = 1.0
    apply_chat_template: bool = True  # wrap each prompt as a user turn with the chat template
    # Score that replaces the reward model's for responses that hit response_length without
    # an EOS; None keeps the reward model's score. Stops the policy gaming a PM that
    # favours long, unfinished answers.
    missing_eos_penalty: float | None = -1.0

    # --- PPO losses
    cliprange: float = 0.2  # policy ratio clip epsilon
    cliprange_value: float = 0.2  # value predictions may move at most this far from rollout values
    vf_coef: float = 0.1  # weight of the value loss; the value head shares the policy trunk
    gamma: float = 1.0  # discount; 1 because the episode is one response of bounded length
    lam: float = 0.95  # GAE lambda
    whiten_advantages: bool = True  # normalise advantages over each rollout's response tokens

    # --- KL penalty: reward_t = -kl_coef * (logp_policy - logp_ref), + score on the last token
    init_kl_coef: float = 0.05  # starting beta
    adaptive_kl: bool = True  # adapt beta toward target_kl (Ziegler et al.); False = fixed beta
    target_kl: float = 6.0  # desired KL(policy || ref) per sequence, in nats
    kl_horizon: int = 10000  # sequences over which beta may change by about e^(0.2) at most

    def __post_init__(self) -> None:
        positive = {
            "learning_rate": self.learning_rate,
            "adam_eps": self.adam_eps,
            "batch_size": self.batch_size,
            "mini_batch_size": self.mini_batch_size,
            "ppo_epochs": self.ppo_epochs,
            "total_steps": self.total_steps,
            "max_prompt_length": self.max_prompt_length,
            "response_length": self.response_length,
            "temperature": self.temperature,
            "cliprange": self.cliprange,
            "cliprange_value": self.cliprange_value,
            "target_kl": self.target_kl,
            "kl_horizon": self.kl_horizon,
        }
        for name, value in positive.items():
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.value_head_learning_rate is not None and self.value_head_learning_rate <= 0:
            raise ValueError("value_head_learning_rate must be > 0 or None")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError("max_grad_norm must be > 0 or None")
        if self.batch_size % self.mini_batch_size:
            raise ValueError(
                f"mini_batch_size ({self.mini_batch_size}) must divide "
                f"batch_size ({self.batch_size})"
            )
        if self.vf_coef < 0:
            raise ValueError("vf_coef must be >= 0")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError("gamma must be in (0, 1]")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError("lam must be in [0, 1]")
        if self.init_kl_coef < 0:
            raise ValueError("init_kl_coef must be >= 0")

    @property
    def num_mini_batches(self) -> int:
        return self.batch_size // self.mini_batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def compute_hash(self) -> str:
        """A stable 16-hex-digit hash of every field, for run ids and cache keys."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PPOConfig:
        """Build from a saved dict; unknown keys are an error, not silently dropped."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown PPOConfig fields: {', '.join(unknown)}")
        return cls(**data)
