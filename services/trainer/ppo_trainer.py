"""PPO for the RL stage of Constitutional AI: maximise E[r_PM(x, y)] - beta * KL(pi || pi_ref).

One :meth:`PPOTrainer.step` is one rollout followed by several PPO epochs on it:

1. **Sample.** Prompts are left-padded and responses sampled token by token at the
   configured temperature with no top-k/top-p, so the behaviour policy is exactly the
   policy being optimised. A row stops at its first EOS (kept as the last response
   token, so the policy learns to stop); later positions are padding with mask 0.
2. **Score.** ``reward_fn(prompts, responses)`` gives one scalar per response (a
   preference model via :func:`pm_reward`, or any exact function). Responses that hit
   ``response_length`` without EOS get ``missing_eos_penalty`` instead.
3. **Recompute.** One forward pass of the policy (log-probs, values, entropy) and of the
   frozen reference (log-probs) over prompt + response, with the sampling-time padding,
   attention mask and position ids. Dropout is off throughout: the models stay in
   ``eval()`` mode, also during the PPO updates, so the first minibatch's ratio is 1.
   (transformers runs gradient checkpointing only in train mode, so it is off here.)
4. **Rewards.** Per token ``-beta * (logp_pi - logp_ref)``, plus the score on the last
   response token. beta follows the adaptive controller of Ziegler et al. 2019.
5. **Advantages.** GAE (gamma, lambda) over response tokens, whitened per rollout.
6. **Update.** ``ppo_epochs`` passes over shuffled minibatches: clipped surrogate loss +
   ``vf_coef`` * clipped value loss, Adam, gradient-norm clipping.

Value function: a linear head on the policy's last hidden state, i.e. a trunk shared
with the policy, as in Ziegler et al. (Stiennon et al. used a separate value network
initialised from the reward model). It costs no second model in memory or compute; the
price is that value-loss gradients also move the policy trunk, which ``vf_coef`` keeps
small.

Several processes (``accelerate launch``; see :class:`PPOTrainer`): each process samples
and scores its own ``batch_size`` prompts, the policy and value head train as one
DistributedDataParallel module whose gradients are averaged in every backward pass,
and the step's scores and statistics are gathered so that the KL controller, and the
metrics, see the whole global batch. Only the main process reports and saves.
"""

from __future__ import annotations

import itertools
import json
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

if TYPE_CHECKING:
    from accelerate import Accelerator

from services.trainer.ppo_config import PPOConfig

log = logging.getLogger(__name__)

RewardFn = Callable[[list[str], list[str]], torch.Tensor]
"""``reward_fn(prompts, responses) -> scores`` of shape ``[len(prompts)]``; texts are the
raw user prompt and the decoded response (EOS and padding removed)."""

ReportFn = Callable[[int, dict[str, float]], None]
CheckpointFn = Callable[[str], None]
"""``on_checkpoint(path)``: called on the main process once a checkpoint is complete."""

VALUE_HEAD_FILE = "value_head.safetensors"
CONFIG_FILE = "ppo_config.json"
STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
"""A checkpoint's Adam state (policy and value-head groups)."""
RNG_FILE = "rng_state_{process}.pt"
"""A checkpoint's sampling and shuffling generator states, one file per process."""


# --------------------------------------------------------------------------- tensor helpers


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1 (over all of them if ``dim`` is None)."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the masked positions (Bessel-corrected by default)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n < 2:
            raise ValueError("masked_var needs at least two unmasked values")
        var = var * n / (n - 1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Normalise ``x`` to unit variance (and zero mean) using masked statistics only;
    masked positions come back as 0 so padding never leaks into a loss."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens ``[batch, time]``.

    ``mask`` is 1 on response tokens, which are contiguous from position 0; the value
    after the last response token is 0 (the episode ends there). Returns
    ``(advantages, returns)`` with ``returns = advantages + values``, both 0 off-mask.
    """
    rewards, values = rewards * mask, values * mask
    advantages = torch.zeros_like(rewards)
    last_gae = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages[:, t] = last_gae
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def logprobs_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under ``logits`` ``[..., vocab]``, computed in float32."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def entropy_of(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution given by ``logits`` ``[..., vocab]``."""
    logits = logits.float()
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def position_ids_of(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that start at 0 on each row's first real token (left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Pad with EOS when the tokenizer has no pad token (TRL's convention): padded
    positions carry attention mask 0, so their id never reaches a result."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


# --------------------------------------------------------------------------- KL controllers


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. 2019, section 2.2: a proportional controller on log(beta).

    ``beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n_steps / horizon``: beta grows
    when the measured KL is above target and shrinks below it, by a bounded amount per
    sequence seen, so one noisy batch cannot swing it.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value = init_kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


# --------------------------------------------------------------------------- models


class ValueHead(nn.Module):
    """Linear value head on the policy's final hidden state (kept in float32)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden_size, 1)
        # Zero init: the first rollout's values are exactly 0 rather than noise from a
        # random projection, so early advantages are plain reward-to-go.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden_states.to(self.linear.weight.dtype)).squeeze(-1)


class PolicyWithValue(nn.Module):
    """The policy and its value head as one module, so that Accelerate wraps them in one
    DistributedDataParallel and a backward pass averages both sets of gradients."""

    def __init__(self, policy: PreTrainedModel, value_head: ValueHead) -> None:
        super().__init__()
        self.policy = policy
        self.value_head = value_head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and values at the last ``keep`` positions."""
        out = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_of(attention_mask),
            use_cache=False,
            output_hidden_states=True,
            logits_to_keep=keep,
        )
        return out.logits, self.value_head(out.hidden_states[-1][:, -keep:])


def load_value_head(directory: str | Path, hidden_size: int) -> ValueHead:
    """The value head written by :meth:`PPOTrainer.save`, to resume training."""
    head = ValueHead(hidden_size)
    head.load_state_dict(load_file(str(Path(directory) / VALUE_HEAD_FILE)))
    return head


def pm_reward(
    pm_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int = 8,
    max_length: int = 1024,
) -> RewardFn:
    """Adapt a preference model (``AutoModelForSequenceClassification``, ``num_labels=1``)
    to a :data:`RewardFn`.

    Each pair is rendered as a two-turn chat (user prompt, assistant response) with the
    tokenizer's chat template, the layout TRL's reward trainer uses. Long inputs keep
    their last ``max_length`` tokens so the response is never cut. Right padding: the
    model pools its score at the rightmost non-pad token.
    """
    pm_model.eval().requires_grad_(False)
    ensure_pad_token(tokenizer)
    if pm_model.config.pad_token_id is None:
        pm_model.config.pad_token_id = tokenizer.pad_token_id
    device = next(pm_model.parameters()).device

    @torch.no_grad()
    def reward(prompts: list[str], responses: list[str]) -> torch.Tensor:
        encoded = []
        for prompt, response in zip(prompts, responses, strict=True):
            chat = [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": response},
            ]
            text = tokenizer.apply_chat_template(chat, tokenize=False)
            encoded.append(tokenizer(text, add_special_tokens=False)["input_ids"][-max_length:])
        scores = []
        for start in range(0, len(encoded), batch_size):
            batch = tokenizer.pad(
                {"input_ids": encoded[start : start + batch_size]},
                padding_side="right",
                return_attention_mask=True,
                return_tensors="pt",
            )
            out = pm_model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            )
            scores.append(out.logits[:, 0].float().cpu())
        return torch.cat(scores)

    return reward


# --------------------------------------------------------------------------- rollouts


@dataclass
class Rollout:
    """One batch of sampled responses; ``[batch, ...]`` tensors on the policy's device."""

    prompts: list[str]
    responses: list[str]  # decoded, without EOS or padding
    query_ids: torch.Tensor  # [B, P] left-padded prompt tokens
    query_mask: torch.Tensor  # [B, P] 1 on real prompt tokens
    response_ids: torch.Tensor  # [B, R] sampled tokens; pad after EOS
    response_mask: torch.Tensor  # [B, R] 1 up to and including EOS
    sample_logprobs: torch.Tensor  # [B, R] log-probs at sampling time (diagnostics only)
    ended: torch.Tensor  # [B] True where the response contains EOS

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, self.response_mask], dim=1)

    def __len__(self) -> int:
        return len(self.prompts)


# --------------------------------------------------------------------------- trainer


class PPOTrainer:
    """PPO with a KL penalty to a frozen reference policy; see the module docstring.

    With an ``accelerator`` (``accelerate.Accelerator``) the models are moved to its
    device and the policy, value head and optimizer are prepared by it; ``batch_size``
    is then per process (the global batch is ``batch_size * num_processes``), every
    process must run the same number of steps, and only the main process calls
    ``report`` and writes in :meth:`save`. Sampling and the no-grad forward passes use
    the unwrapped policy: DDP's forward is a collective, and ranks sample for different
    numbers of tokens.
    """

    def __init__(
        self,
        policy: PreTrainedModel,
        ref_policy: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        reward_fn: RewardFn,
        config: PPOConfig,
        *,
        value_head: ValueHead | None = None,
        accelerator: Accelerator | None = None,
    ) -> None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer needs an EOS token: responses end at EOS")
        if config.apply_chat_template and tokenizer.chat_template is None:
            raise ValueError("apply_chat_template=True but the tokenizer has no chat template")
        self.config = config
        self.policy = policy
        self.ref_policy = ref_policy.eval().requires_grad_(False)
        ensure_pad_token(tokenizer)
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.eos_token_id: int = tokenizer.eos_token_id
        self.pad_token_id: int = tokenizer.pad_token_id
        self.accelerator = accelerator
        self.num_processes = accelerator.num_processes if accelerator else 1
        self.process_index = accelerator.process_index if accelerator else 0
        self.is_main_process = accelerator.is_main_process if accelerator else True
        if accelerator is not None:
            policy.to(accelerator.device)
            self.ref_policy.to(accelerator.device)
        self.device = next(policy.parameters()).device

        hidden_size = policy.config.get_text_config().hidden_size
        self.value_head = (value_head or ValueHead(hidden_size)).to(self.device)
        # Each process samples its own responses: its own stream of random numbers.
        self.sample_generator = torch.Generator(device=self.device).manual_seed(
            config.seed + self.process_index
        )
        self.shuffle_generator = torch.Generator().manual_seed(config.seed + 1)

        optimizer = torch.optim.Adam(
            [
                {"params": [p for p in policy.parameters() if p.requires_grad]},
                {
                    "params": list(self.value_head.parameters()),
                    "lr": config.value_head_learning_rate or config.learning_rate,
                },
            ],
            lr=config.learning_rate,
            eps=config.adam_eps,
        )
        self.policy_value = PolicyWithValue(policy, self.value_head)
        """The module the updates run through (DDP-wrapped under several processes)."""
        self.optimizer = optimizer
        if accelerator is not None:
            self.policy_value, self.optimizer = accelerator.prepare(self.policy_value, optimizer)
        self.kl_ctl: FixedKLController | AdaptiveKLController = (
            AdaptiveKLController(config.init_kl_coef, config.target_kl, config.kl_horizon)
            if config.adaptive_kl
            else FixedKLController(config.init_kl_coef)
        )
        self.global_step = 0
        self.prompts_used = 0
        """Prompts taken from ``train``'s iterator so far, over all processes."""
        self._skip_prompts = 0

    # ------------------------------------------------------------------ sampling

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids and mask ``[B, P]``; chat-templated if configured."""
        rows = []
        for prompt in prompts:
            if self.config.apply_chat_template:
                text = self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": prompt}],
                    tokenize=False,
                    add_generation_prompt=True,
                )
                ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids = self.tokenizer(prompt)["input_ids"]
            if not ids:
                raise ValueError(f"prompt {prompt!r} encodes to no tokens")
            rows.append(ids[-self.config.max_prompt_length :])
        batch = self.tokenizer.pad(
            {"input_ids": rows},
            padding_side="left",
            return_attention_mask=True,
            return_tensors="pt",
        )
        return batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)

    @torch.no_grad()
    def generate(self, prompts: list[str]) -> Rollout:
        """Sample one response per prompt from the current policy (KV-cached loop).

        Written out rather than ``model.generate`` so nothing (a model's generation
        config, logits processors) can change the sampling distribution, and so the
        position ids are exactly those the recomputation uses: each finished row keeps
        feeding padding with attention mask 0.
        """
        self.policy.eval()
        query_ids, query_mask = self.encode_prompts(prompts)
        batch = len(prompts)
        attention_mask = query_mask
        input_ids = query_ids
        position_ids = position_ids_of(attention_mask)
        past_key_values = None
        finished = torch.zeros(batch, dtype=torch.bool, device=self.device)
        tokens, logprobs, alive_masks = [], [], []
        for _ in range(self.config.response_length):
            out = self.policy(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=True,
                logits_to_keep=1,
            )
            past_key_values = out.past_key_values
            logp = F.log_softmax(out.logits[:, -1].float() / self.config.temperature, dim=-1)
            token = torch.multinomial(logp.exp(), 1, generator=self.sample_generator).squeeze(1)
            alive = ~finished
            token = torch.where(alive, token, torch.full_like(token, self.pad_token_id))
            tokens.append(token)
            logprobs.append(logp.gather(-1, token.unsqueeze(-1)).squeeze(-1))
            alive_masks.append(alive)
            finished = finished | (token == self.eos_token_id)
            attention_mask = torch.cat([attention_mask, alive.long().unsqueeze(1)], dim=1)
            input_ids = token.unsqueeze(1)
            position_ids = position_ids_of(attention_mask)[:, -1:]
            if bool(finished.all()):
                break
        response_ids = torch.stack(tokens, dim=1)
        response_mask = torch.stack(alive_masks, dim=1).long()
        sample_logprobs = torch.stack(logprobs, dim=1) * response_mask
        return Rollout(
            prompts=list(prompts),
            responses=self._decode(response_ids, response_mask),
            query_ids=query_ids,
            query_mask=query_mask,
            response_ids=response_ids,
            response_mask=response_mask,
            sample_logprobs=sample_logprobs,
            ended=finished,
        )

    def _decode(self, response_ids: torch.Tensor, response_mask: torch.Tensor) -> list[str]:
        texts = []
        for ids, mask in zip(response_ids.tolist(), response_mask.tolist(), strict=True):
            ids = [t for t, m in zip(ids, mask, strict=True) if m]
            if ids and ids[-1] == self.eos_token_id:
                ids = ids[:-1]
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=True))
        return texts

    # ------------------------------------------------------------------ forward passes

    def forward(
        self, model: PreTrainedModel, rollout: Rollout, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Log-probs ``[b, R]`` of the response tokens under ``model``, its logits over
        the response positions ``[b, R, V]`` (temperature applied), and, for the policy,
        the values ``[b, R]`` of the states before each response token.

        Uses the rollout's own padding, attention mask and position ids, so for the
        policy it reproduces the sampling-time distribution.
        """
        input_ids, attention_mask = rollout.input_ids, rollout.attention_mask
        response_ids = rollout.response_ids
        if rows is not None:
            input_ids, attention_mask, response_ids = (
                input_ids[rows],
                attention_mask[rows],
                response_ids[rows],
            )
        keep = response_ids.shape[1] + 1
        values = None
        if model is self.policy:
            # Gradients flow through the prepared (possibly DDP) module; no-grad passes
            # use the plain one, which holds the same parameters.
            module = self.policy_value if torch.is_grad_enabled() else self._plain_policy_value
            all_logits, all_values = module(input_ids, attention_mask, keep)
            values = all_values[:, :-1]
        else:
            all_logits = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_of(attention_mask),
                use_cache=False,
                logits_to_keep=keep,
            ).logits
        # Position i predicts token i + 1: the logits for the R response tokens are at
        # [P - 1, P + R - 2], i.e. all kept positions but the last.
        logits = all_logits[:, :-1].float() / self.config.temperature
        logprobs = logprobs_of(logits, response_ids)
        return logprobs, logits, values

    @property
    def _plain_policy_value(self) -> nn.Module:
        if self.accelerator is None:
            return self.policy_value
        return self.accelerator.unwrap_model(self.policy_value)

    @torch.no_grad()
    def score(self, rollout: Rollout) -> torch.Tensor:
        """``reward_fn`` scores ``[B]``, with ``missing_eos_penalty`` for unfinished responses."""
        scores = self.reward_fn(rollout.prompts, rollout.responses)
        scores = torch.as_tensor(scores, dtype=torch.float32).reshape(-1).to(self.device)
        if scores.shape[0] != len(rollout):
            raise ValueError(f"reward_fn returned {scores.shape[0]} scores for {len(rollout)}")
        if self.config.missing_eos_penalty is not None:
            penalty = torch.full_like(scores, self.config.missing_eos_penalty)
            scores = torch.where(rollout.ended, scores, penalty)
        return scores

    # ------------------------------------------------------------------ PPO step

    def step(self, prompts: list[str]) -> dict[str, float]:
        """One rollout on ``prompts`` and ``ppo_epochs`` of updates; returns metrics."""
        cfg = self.config
        t_start = time.perf_counter()
        # eval() for the whole step: dropout off, so recomputed log-probs equal the
        # behaviour log-probs and the PPO ratio starts at exactly 1.
        self.policy.eval()
        self.value_head.eval()

        rollout = self.generate(prompts)
        t_generated = time.perf_counter()
        scores = self.score(rollout)
        t_scored = time.perf_counter()

        mask = rollout.response_mask.float()
        old_logprobs, ref_logprobs, old_values, entropies = [], [], [], []
        with torch.no_grad():
            for rows in torch.arange(len(rollout), device=self.device).split(cfg.mini_batch_size):
                logprobs, logits, values = self.forward(self.policy, rollout, rows)
                assert values is not None
                old_logprobs.append(logprobs)
                old_values.append(values)
                entropies.append(entropy_of(logits))
                del logits
                ref_logprobs.append(self.forward(self.ref_policy, rollout, rows)[0])
        old_logprob = torch.cat(old_logprobs) * mask
        ref_logprob = torch.cat(ref_logprobs) * mask
        old_value = torch.cat(old_values) * mask
        entropy = torch.cat(entropies)

        # Rewards: KL penalty on every response token, the score on the last one.
        kl_coef = self.kl_ctl.value
        kl = (old_logprob - ref_logprob) * mask
        non_score_reward = -kl_coef * kl
        rewards = non_score_reward.clone()
        last = mask.sum(1).long() - 1
        rewards[torch.arange(len(rollout), device=self.device), last] += scores

        advantages, returns = compute_gae(rewards, old_value, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages and mask.sum() > 1:
            advantages = masked_whiten(advantages, mask)
        t_prepared = time.perf_counter()

        update_stats = self._ppo_epochs(rollout, old_logprob, old_value, advantages, returns)
        t_updated = time.perf_counter()

        # Every process must see the same KL, or their coefficients drift apart.
        global_scores = self._gather(scores)
        sequence_kl = self._gather(kl.sum(1)).mean().item()
        self.kl_ctl.update(sequence_kl, len(rollout) * self.num_processes)
        self.global_step += 1

        response_tokens = int(mask.sum().item())
        total_tokens = response_tokens + int(rollout.query_mask.sum().item())
        elapsed = t_updated - t_start
        metrics = {
            "step": float(self.global_step),
            "score": global_scores.mean().item(),
            "score_std": global_scores.std().item() if len(global_scores) > 1 else 0.0,
            "non_score_reward": non_score_reward.sum(1).mean().item(),
            "reward": (scores + non_score_reward.sum(1)).mean().item(),
            "kl": sequence_kl,
            "kl_coef": kl_coef,
            "entropy": masked_mean(entropy, mask).item(),
            "response_length": mask.sum(1).mean().item(),
            "eos_fraction": rollout.ended.float().mean().item(),
            **update_stats,
            "value_mean": masked_mean(old_value, mask).item(),
            "return_mean": masked_mean(returns, mask).item(),
            "time_generate": t_generated - t_start,
            "time_score": t_scored - t_generated,
            "time_forward": t_prepared - t_scored,
            "time_update": t_updated - t_prepared,
            "time_step": elapsed,
            "response_tokens": float(response_tokens),
            "tokens_per_second": total_tokens / elapsed,
            "response_tokens_per_second": response_tokens / elapsed,
        }
        return self._across_processes(metrics)

    def _gather(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` ``[n]`` of every process, concatenated (equal ``n`` everywhere)."""
        if self.accelerator is None or self.num_processes == 1:
            return values
        return self.accelerator.gather(values.contiguous())

    def _across_processes(self, metrics: dict[str, float]) -> dict[str, float]:
        """One process's step metrics made global: means over processes, except token
        counts (summed), times (the slowest process's, which the others waited for) and
        throughputs (all processes' tokens over that time). Scores and KL are already
        global."""
        if self.num_processes == 1:
            return metrics
        keys = sorted(metrics)
        local = torch.tensor([[metrics[k] for k in keys]], dtype=torch.float64, device=self.device)
        table = self._gather(local).cpu()  # [processes, keys]
        column = {k: table[:, i] for i, k in enumerate(keys)}
        merged = {k: v.mean().item() for k, v in column.items()}
        elapsed = column["time_step"].max().item()
        for key in keys:
            if key.startswith("time_"):
                merged[key] = column[key].max().item()
        merged["response_tokens"] = column["response_tokens"].sum().item()
        merged["tokens_per_second"] = (
            column["tokens_per_second"] * column["time_step"]
        ).sum().item() / elapsed
        merged["response_tokens_per_second"] = merged["response_tokens"] / elapsed
        return merged

    def _ppo_epochs(
        self,
        rollout: Rollout,
        old_logprob: torch.Tensor,
        old_value: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
    ) -> dict[str, float]:
        cfg = self.config
        mask_all = rollout.response_mask.float()
        totals: dict[str, float] = {}
        n_updates = 0
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(rollout), generator=self.shuffle_generator)
            for rows in order.to(self.device).split(cfg.mini_batch_size):
                mask = mask_all[rows]
                logprob, _, vpred = self.forward(self.policy, rollout, rows)
                assert vpred is not None
                adv, ret = advantages[rows], returns[rows]

                log_ratio = (logprob - old_logprob[rows]) * mask
                ratio = torch.exp(log_ratio)
                pg_losses = -adv * ratio
                pg_losses_clipped = -adv * torch.clamp(
                    ratio, 1.0 - cfg.cliprange, 1.0 + cfg.cliprange
                )
                pg_loss = masked_mean(torch.max(pg_losses, pg_losses_clipped), mask)

                v_old = old_value[rows]
                vpred_clipped = v_old + torch.clamp(
                    vpred - v_old, -cfg.cliprange_value, cfg.cliprange_value
                )
                vf_losses = (vpred - ret) ** 2
                vf_losses_clipped = (vpred_clipped - ret) ** 2
                vf_loss = 0.5 * masked_mean(torch.max(vf_losses, vf_losses_clipped), mask)

                loss = pg_loss + cfg.vf_coef * vf_loss
                self.optimizer.zero_grad(set_to_none=True)
                if self.accelerator is not None:
                    self.accelerator.backward(loss)  # DDP averages the gradients here
                else:
                    loss.backward()
                if cfg.max_grad_norm is not None:
                    params = [p for group in self.optimizer.param_groups for p in group["params"]]
                    clip = (
                        self.accelerator.clip_grad_norm_
                        if self.accelerator is not None
                        else torch.nn.utils.clip_grad_norm_
                    )
                    grad_norm = float(clip(params, cfg.max_grad_norm))
                else:
                    grad_norm = float("nan")
                self.optimizer.step()

                with torch.no_grad():
                    stats = {
                        "policy_loss": pg_loss.item(),
                        "value_loss": vf_loss.item(),
                        "clipfrac": masked_mean(
                            (pg_losses_clipped > pg_losses).float(), mask
                        ).item(),
                        "value_clipfrac": masked_mean(
                            (vf_losses_clipped > vf_losses).float(), mask
                        ).item(),
                        # 0.5 * E[(log ratio)^2]: a low-variance estimate of KL(old || new).
                        "approx_kl": (0.5 * masked_mean(log_ratio**2, mask)).item(),
                        "value_error": masked_mean(vf_losses, mask).item(),
                        "ratio": masked_mean(ratio, mask).item(),
                        "grad_norm": grad_norm,
                    }
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                n_updates += 1
        return {key: value / n_updates for key, value in totals.items()}

    # ------------------------------------------------------------------ loop and saving

    def train(
        self,
        prompt_iterator: Iterable[str],
        steps: int | None = None,
        report: ReportFn | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        on_checkpoint: CheckpointFn | None = None,
    ) -> list[dict[str, float]]:
        """Run ``steps`` PPO steps (default: what is left of ``config.total_steps``), each
        on the next ``batch_size`` prompts; stops early when the iterator runs out (a final
        partial batch is dropped). Wrap a finite list in ``itertools.cycle`` to loop over it.
        ``report(step, metrics)`` is called after every step. Returns every step's metrics.

        With a ``checkpoint_dir`` and ``config.save_steps``, every that many steps a checkpoint
        is written to ``checkpoint_dir/checkpoint-<step>`` (:meth:`save_checkpoint`), then
        ``on_checkpoint(path)`` is called and older checkpoints there are removed. After
        :meth:`resume`, pass the same iterator as the first attempt: the prompts it had
        used are skipped, so the run continues where it stopped.

        Under several processes every process passes the same iterator: a step takes
        ``batch_size * num_processes`` prompts and each process trains on its own slice;
        only the main process calls ``report`` and ``on_checkpoint``.
        """
        steps = self.config.total_steps - self.global_step if steps is None else steps
        size = self.config.batch_size
        prompts = itertools.islice(iter(prompt_iterator), self._skip_prompts, None)
        self._skip_prompts = 0
        history = []
        for _ in range(steps):
            batch = list(itertools.islice(prompts, size * self.num_processes))
            if len(batch) < size * self.num_processes:
                log.info("prompt iterator exhausted after %d steps", len(history))
                break
            self.prompts_used += len(batch)
            mine = batch[self.process_index * size : (self.process_index + 1) * size]
            metrics = self.step(mine)
            history.append(metrics)
            if report is not None and self.is_main_process:
                report(self.global_step, metrics)
            every = self.config.save_steps
            if checkpoint_dir is not None and every and self.global_step % every == 0:
                self._checkpoint(Path(checkpoint_dir), on_checkpoint)
        return history

    def _checkpoint(self, checkpoint_dir: Path, on_checkpoint: CheckpointFn | None) -> None:
        path = self.save_checkpoint(checkpoint_dir / f"checkpoint-{self.global_step}")
        if not self.is_main_process:
            return
        if on_checkpoint is not None:
            on_checkpoint(str(path))
        # Only once the new one is recorded: a crash in between still has the old one.
        for old in checkpoint_dir.glob("checkpoint-*"):
            if old != path:
                shutil.rmtree(old, ignore_errors=True)

    def save_checkpoint(self, directory: str | Path) -> Path:
        """:meth:`save` plus what resuming needs: the optimizer state and every process's
        random states. Written to ``<directory>.partial`` and renamed, so a checkpoint
        directory is either complete or absent."""
        final = Path(directory)
        partial = final.with_name(final.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        rng = {
            "sample": self.sample_generator.get_state(),
            "shuffle": self.shuffle_generator.get_state(),
        }
        torch.save(rng, partial / RNG_FILE.format(process=self.process_index))
        self.save(partial)  # waits for every process; the main one writes
        if self.is_main_process:
            torch.save(self.optimizer.state_dict(), partial / OPTIMIZER_FILE)
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        return final

    def resume(self, directory: str | Path) -> None:
        """Continue from a :meth:`save_checkpoint` directory: policy and value-head
        weights, optimizer state, KL coefficient, step, prompts used and random states.
        The checkpoint must come from this config (hash checked)."""
        source = Path(directory)
        state = json.loads((source / STATE_FILE).read_text())
        if state["config_hash"] != self.config.config_hash():
            raise ValueError(
                f"checkpoint {source} was written with config {state['config_hash']}, "
                f"this run's is {self.config.config_hash()}"
            )
        saved = type(self.policy).from_pretrained(source, dtype=self.policy.dtype)
        self.policy.load_state_dict(saved.state_dict())
        self.value_head.load_state_dict(load_file(str(source / VALUE_HEAD_FILE)))
        optimizer = torch.load(source / OPTIMIZER_FILE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(optimizer)
        rng_file = source / RNG_FILE.format(process=self.process_index)
        if rng_file.is_file():
            rng = torch.load(rng_file, weights_only=True)
            self.sample_generator.set_state(rng["sample"])
            self.shuffle_generator.set_state(rng["shuffle"])
        else:  # written by fewer processes: training continues, not bit for bit
            log.warning("%s has no random state for process %d", source, self.process_index)
        self.kl_ctl.value = float(state["kl_coef"])
        self.global_step = int(state["global_step"])
        self.prompts_used = self._skip_prompts = int(state.get("prompts_used", 0))
        log.info("resumed PPO from %s at step %d", source, self.global_step)

    def save(self, output_dir: str | Path) -> Path:
        """Write the policy and tokenizer (``from_pretrained``-loadable), the value head
        and the PPO config plus trainer state as JSON. Under several processes only the
        main one writes (the weights are the same everywhere), after all have arrived."""
        out = Path(output_dir)
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
            if not self.is_main_process:
                return out
        out.mkdir(parents=True, exist_ok=True)
        self.policy.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        state = {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()}
        save_file(state, str(out / VALUE_HEAD_FILE))
        (out / CONFIG_FILE).write_text(json.dumps(self.config.as_dict(), indent=2) + "\n")
        trainer_state: dict[str, Any] = {
            "global_step": self.global_step,
            "prompts_used": self.prompts_used,
            "kl_coef": self.kl_ctl.value,
            "config_hash": self.config.config_hash(),
        }
        (out / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
        return out
