"""The configuration of a training run: typed, bounded, hashed; one class per run type.

The gateway validates a run's ``config`` against its type's class when the run is
submitted (a bad field is a 422 naming it) and stores it normalised, every default
filled in, with its :meth:`RunConfig.config_hash`. The trainer builds the same class
from the stored run, trains with it and reports the hash it trained with, which must
equal the stored one. The TRL plumbing (``TrainingArguments`` from a config) lives in
``services/trainer``; this module only knows the fields.

PM, SFT, DPO and classifier runs share the ``TrainingArguments``-style fields of
:class:`TrainingConfig`; RLOO and GRPO (TRL's online trainers) share
:class:`TrainerArguments` and :class:`OnlineRLConfig`; PPO, Charter's own trainer, has
its own (Ziegler et al. 2019, Stiennon et al. 2020, and "The N implementation details of
RLHF with PPO", Huang et al. 2023).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from charter.core.classifier_data import Target
from charter.core.constitution import canonical_json

RunType = Literal["sft", "pm", "dpo", "ppo", "rloo", "grpo", "classifier"]

LrSchedulerType = Literal[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
]
"""The ``transformers`` schedules that need no ``lr_scheduler_kwargs`` (which a run cannot set)."""

DPOLossType = Literal[
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
    "soft",
]
"""TRL's DPO losses (its ``sft`` term is left out: it ignores the rejected response), and
Charter's ``soft``: cross-entropy against each row's ``chosen_probability``."""


class RunConfig(BaseModel):
    """What every run config shares: strict fields, no unknown keys, one hash."""

    # strict: JSON's types as they are (no "1e-5" strings or 0/1 booleans); finite numbers.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    METHOD: ClassVar[RunType]
    """The run type; part of the hash."""
    NOT_HASHED: ClassVar[frozenset[str]] = frozenset()
    """Fields that change how a run is observed, not what it learns."""

    def as_dict(self) -> dict[str, Any]:
        """Every field, defaults included, as JSON values (what a run stores)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Self:
        """Build from stored JSON; unknown keys are an error, not silently dropped."""
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
        return cls.model_validate(values)

    def config_hash(self) -> str:
        """16 hex digits of sha256 over the method and every field that affects the
        trained weights (canonical JSON)."""
        hashed = {k: v for k, v in self.as_dict().items() if k not in self.NOT_HASHED}
        text = canonical_json({"method": self.METHOD, **hashed})
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class TrainerArguments(RunConfig):
    """``TrainingArguments``-style hyper-parameters of every run TRL's trainers run.

    A subclass may redeclare a shared field to change its default or describe it for
    its method, and adds its own fields.
    """

    NOT_HASHED = frozenset({"logging_steps", "save_steps"})

    learning_rate: float = Field(1e-5, gt=0.0, le=1.0, description="Peak AdamW learning rate.")
    max_steps: int = Field(
        -1,
        ge=-1,
        description="Optimizer steps to run (>= 1); -1 lets num_train_epochs decide.",
    )
    num_train_epochs: float = Field(
        1.0,
        ge=0.0,
        validate_default=True,  # checked against max_steps even when left out
        description="Passes over the training rows (> 0 unless max_steps is set); ignored "
        "when max_steps is set.",
    )
    per_device_train_batch_size: int = Field(
        8, ge=1, description="Rows per device and micro-batch."
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches accumulated into one optimizer step."
    )
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay.")
    warmup_steps: float = Field(
        0.0,
        ge=0.0,
        description="Linear warm-up: a step count (>= 1) or a fraction of all steps (< 1).",
    )
    lr_scheduler_type: LrSchedulerType = Field(
        "linear", description="Learning-rate schedule after warm-up."
    )
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seed for the data order and dropout.")
    bf16: bool = Field(False, description="bfloat16 mixed precision (needs hardware support).")
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass: less memory, about 20% slower.",
    )
    logging_steps: int = Field(
        10, ge=1, description="Optimizer steps between two metric reports (not hashed)."
    )
    save_steps: int | None = Field(
        None,
        ge=1,
        description="Save a resumable checkpoint every this many steps (the last two are "
        "kept); null saves none (not hashed).",
    )

    @field_validator("max_steps")
    @classmethod
    def _not_zero(cls, max_steps: int) -> int:
        if max_steps == 0:
            raise ValueError("max_steps must be -1 or >= 1")
        return max_steps

    @field_validator("num_train_epochs")
    @classmethod
    def _epochs_when_no_steps(cls, epochs: float, info: ValidationInfo) -> float:
        # A field validator, so the error names the field (max_steps is declared first).
        if info.data.get("max_steps") == -1 and not epochs > 0:
            raise ValueError("num_train_epochs must be > 0 when max_steps is -1")
        return epochs


class TrainingConfig(TrainerArguments):
    """What the PM, SFT, DPO and classifier runs share beyond :class:`TrainerArguments`: a
    token limit per row and a held-out evaluation split."""

    NOT_HASHED = TrainerArguments.NOT_HASHED | {"per_device_eval_batch_size", "eval_steps"}

    max_length: int | None = Field(1024, ge=2, description="Token limit of a row; null keeps all.")
    eval_fraction: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Share of the dataset's rows held out for evaluation (a fixed split); "
        "0 holds none out.",
    )
    per_device_eval_batch_size: int = Field(
        8, ge=1, description="Rows per device in evaluation (not hashed)."
    )
    eval_steps: int | None = Field(
        None,
        ge=1,
        description="Evaluate on the held-out rows every this many steps; null evaluates at "
        "the end only (not hashed).",
    )


class PMConfig(TrainingConfig):
    """A preference-model run: the PM scores a conversation with one scalar reward.

    It learns from preference rows with the soft cross-entropy on the AI feedback label
    ``chosen_probability`` (Bai et al. 2022, §4.1: the feedback model's normalised
    probabilities are soft targets). ``soft_labels=False`` trains on the hard labels
    (``p = 1``), which is TRL's ``RewardTrainer`` loss.
    """

    METHOD = "pm"

    learning_rate: float = Field(
        1e-5,
        gt=0.0,
        le=1.0,
        description="Peak AdamW learning rate (conservative for a full fine-tune).",
    )
    per_device_train_batch_size: int = Field(
        8, ge=1, description="Preference pairs per device and step (each pair is two sequences)."
    )
    max_length: int | None = Field(
        1024,
        ge=2,
        description="Pairs with a longer chosen or rejected sequence (in tokens) are dropped; "
        "null keeps all.",
    )
    seed: int = Field(
        42,
        ge=0,
        le=2**32 - 1,
        description="Seed for the score head's initialisation, the data order and dropout.",
    )
    per_device_eval_batch_size: int = Field(
        8, ge=1, description="Pairs per device in evaluation (not hashed)."
    )
    soft_labels: bool = Field(
        True,
        description="Train on chosen_probability; false trains as if every label were 1 "
        "(hard labels).",
    )
    center_rewards_coefficient: float | None = Field(
        None,
        ge=0.0,
        description="Weight of the mean-zero reward penalty (Eisenstein et al. 2023); null "
        "disables it.",
    )


class SFTConfig(TrainingConfig):
    """A supervised fine-tuning run (SL-CAI, Bai et al. 2022, §3): each row is a
    conversation ``prompt`` and the revised assistant ``completion``."""

    METHOD = "sft"

    learning_rate: float = Field(
        2e-5, gt=0.0, le=1.0, description="Peak AdamW learning rate (TRL's SFT default)."
    )
    per_device_train_batch_size: int = Field(
        8, ge=1, description="Sequences per device and micro-batch."
    )
    max_length: int | None = Field(
        1024,
        ge=2,
        description="Sequences are truncated to this many tokens (keeping the start); null "
        "keeps all.",
    )
    per_device_eval_batch_size: int = Field(
        8, ge=1, description="Sequences per device in evaluation (not hashed)."
    )
    completion_only_loss: bool = Field(
        True,
        description="Loss on the assistant completion only; false also trains on the prompt "
        "tokens.",
    )


class DPOConfig(TrainingConfig):
    """A DPO run (Rafailov et al. 2023) on preference rows, an alternative to PM + PPO.

    The reference policy is a frozen copy of the starting model. TRL's losses treat rows
    as hard preferences; ``soft`` trains towards each row's soft label.
    """

    METHOD = "dpo"

    learning_rate: float = Field(
        1e-6, gt=0.0, le=1.0, description="Peak AdamW learning rate (TRL's DPO default)."
    )
    per_device_train_batch_size: int = Field(
        8, ge=1, description="Preference pairs per device and micro-batch."
    )
    max_length: int | None = Field(
        1024,
        ge=2,
        description="Prompt + response is truncated to this many tokens (keeping the start); "
        "null keeps all.",
    )
    per_device_eval_batch_size: int = Field(
        8, ge=1, description="Preference pairs per device in evaluation (not hashed)."
    )
    beta: float = Field(
        0.1,
        gt=0.0,
        description="Strength of the implicit KL penalty towards the reference; higher stays "
        "closer.",
    )
    loss_type: DPOLossType = Field(
        "sigmoid",
        description="sigmoid is the DPO paper's loss (every row a hard preference); soft is "
        "its cross-entropy against each row's chosen_probability p, -p log sigmoid(x) - "
        "(1 - p) log sigmoid(-x) with x the implicit reward margin (conservative DPO with "
        "epsilon = 1 - p), minimal where sigmoid(x) = p.",
    )


class PPOConfig(RunConfig):
    """The PPO stage of RL-CAI: the policy against a preference model, KL-penalised.

    Sizes are counted in sequences (prompt + sampled response); KL values are in nats
    per sequence. Every field but ``save_steps`` is hashed.
    """

    METHOD = "ppo"
    NOT_HASHED = frozenset({"save_steps"})

    # --- optimisation
    learning_rate: float = Field(
        1e-5, gt=0.0, description="Adam step size for the policy (language model) weights."
    )
    value_head_learning_rate: float | None = Field(
        None, gt=0.0, description="Value head step size; null uses learning_rate."
    )
    adam_eps: float = Field(
        1e-5, gt=0.0, description="Adam epsilon; 1e-5 as in the PPO reference code, not 1e-8."
    )
    max_grad_norm: float | None = Field(
        1.0, gt=0.0, description="Global gradient-norm clip; null disables clipping."
    )
    seed: int = Field(
        0,
        ge=0,
        le=2**32 - 1,
        description="Seeds the value-head init, sampling and minibatch shuffling.",
    )

    # --- batch shape
    batch_size: int = Field(
        64, gt=0, description="Prompts (and sampled responses) per rollout, i.e. per PPO step."
    )
    mini_batch_size: int = Field(
        16,
        gt=0,
        validate_default=True,  # checked against batch_size even when left out
        description="Sequences per gradient step; must divide batch_size.",
    )
    ppo_epochs: int = Field(
        4, gt=0, description="Passes over each rollout, minibatches reshuffled every pass."
    )
    total_steps: int = Field(1000, gt=0, description="PPO steps (rollouts) to train.")
    save_steps: int | None = Field(
        50,
        ge=1,
        description="Write a resumable checkpoint every this many steps (policy, value head, "
        "optimizer state, KL coefficient, random states), so a crashed run resumes from it; "
        "null writes none (not hashed).",
    )

    # --- sampling
    max_prompt_length: int = Field(
        512,
        gt=0,
        description="Longer prompts keep their last tokens (the generation prompt).",
    )
    response_length: int = Field(
        64, gt=0, description="Most tokens sampled per response (EOS included)."
    )
    # Keep 1.0 with no top-k/top-p: the sampled tokens must come from exactly the
    # distribution PPO optimises, or the behaviour log-probs are wrong.
    temperature: float = Field(
        1.0,
        gt=0.0,
        description="Sampling temperature; logits are divided by it when sampling and when "
        "recomputing log-probs.",
    )
    apply_chat_template: bool = Field(
        True, description="Wrap each prompt as a user turn with the chat template."
    )
    missing_eos_penalty: float | None = Field(
        -1.0,
        description="Score that replaces the reward model's for responses that hit "
        "response_length without an EOS (stops the policy gaming a PM that favours long, "
        "unfinished answers); null keeps the reward model's score.",
    )

    # --- PPO losses
    cliprange: float = Field(0.2, gt=0.0, description="Policy ratio clip epsilon.")
    cliprange_value: float = Field(
        0.2,
        gt=0.0,
        description="Value predictions may move at most this far from the rollout values.",
    )
    vf_coef: float = Field(
        0.1, ge=0.0, description="Weight of the value loss; the value head shares the trunk."
    )
    gamma: float = Field(
        1.0,
        gt=0.0,
        le=1.0,
        description="Discount; 1 because the episode is one response of bounded length.",
    )
    lam: float = Field(0.95, ge=0.0, le=1.0, description="GAE lambda.")
    whiten_advantages: bool = Field(
        True, description="Normalise advantages over each rollout's response tokens."
    )

    # --- KL penalty: reward_t = -kl_coef * (logp_policy - logp_ref), + score on the last token
    init_kl_coef: float = Field(0.05, ge=0.0, description="Starting KL coefficient (beta).")
    adaptive_kl: bool = Field(
        True,
        description="Adapt beta toward target_kl (Ziegler et al.); false keeps it fixed.",
    )
    target_kl: float = Field(
        6.0, gt=0.0, description="Desired KL(policy || reference) per sequence, in nats."
    )
    kl_horizon: int = Field(
        10000,
        gt=0,
        description="Sequences over which beta may change by about e^0.2 at most.",
    )

    @field_validator("mini_batch_size")
    @classmethod
    def _mini_batches_fit(cls, mini_batch_size: int, info: ValidationInfo) -> int:
        batch_size = info.data.get("batch_size")
        if batch_size is not None and batch_size % mini_batch_size:
            raise ValueError(
                f"mini_batch_size ({mini_batch_size}) must divide batch_size ({batch_size})"
            )
        return mini_batch_size

    @property
    def num_mini_batches(self) -> int:
        return self.batch_size // self.mini_batch_size


class OnlineRLConfig(TrainerArguments):
    """What the RLOO and GRPO runs share: TRL samples ``num_generations`` completions per
    prompt from the policy, scores them with the PM of ``reward_run``, and uses the
    group as its own baseline (no value model). The KL reference is the starting policy.

    ``per_device_train_batch_size`` counts completions, so a step sees
    ``per_device_train_batch_size / num_generations`` prompts per device.
    """

    learning_rate: float = Field(
        1e-6, gt=0.0, le=1.0, description="Peak AdamW learning rate (TRL's default)."
    )
    max_steps: int = Field(
        500, ge=-1, description="Optimizer steps to run (>= 1); -1 lets num_train_epochs decide."
    )
    per_device_train_batch_size: int = Field(
        8,
        ge=1,
        description="Completions per device and micro-batch; with gradient_accumulation_steps "
        "a multiple of num_generations.",
    )
    num_generations: int = Field(
        4,
        ge=2,
        validate_default=True,  # checked against the batch even when left out
        description="Completions sampled per prompt: the group each one is compared with.",
    )
    max_completion_length: int = Field(64, ge=1, description="Most tokens sampled per completion.")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature.")
    beta: float = Field(
        0.05,
        ge=0.0,
        description="KL coefficient towards the starting policy; 0 loads no reference model.",
    )
    epsilon: float = Field(0.2, gt=0.0, description="Policy ratio clip epsilon.")
    num_iterations: int = Field(
        1, ge=1, description="Updates on each batch of completions before sampling again."
    )

    @field_validator("num_generations")
    @classmethod
    def _groups_fit(cls, num_generations: int, info: ValidationInfo) -> int:
        batch = info.data.get("per_device_train_batch_size")
        accumulation = info.data.get("gradient_accumulation_steps")
        if (
            batch is not None
            and accumulation is not None
            and (batch * accumulation) % num_generations
        ):
            raise ValueError(
                f"num_generations ({num_generations}) must divide per_device_train_batch_size "
                f"x gradient_accumulation_steps ({batch} x {accumulation})"
            )
        return num_generations


class RLOOConfig(OnlineRLConfig):
    """An RLOO run (Ahmadian et al. 2024): REINFORCE with each completion's baseline the
    mean reward of the other completions of its prompt; the KL penalty is in the reward."""

    METHOD = "rloo"

    normalize_advantages: bool = Field(
        False, description="Scale advantages to unit variance over the batch."
    )


class GRPOConfig(OnlineRLConfig):
    """A GRPO run (Shao et al. 2024): clipped policy-gradient steps on group-normalised
    rewards; the KL to the reference is a loss term."""

    METHOD = "grpo"

    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="Divide advantages by the reward standard deviation of each prompt's "
        "group, of the whole batch, or not at all.",
    )


class ClassifierConfig(TrainingConfig):
    """A constitutional classifier run (Sharma et al. 2025): a causal LM with a fresh
    sequence-classification head, fine-tuned on a classifier dataset to score each
    restricted category (one sigmoid per category).

    An ``input`` classifier scores the user's prompt; an ``output`` one every
    ``prefix_stride``-th token prefix of a response, so that a stream can be stopped
    early; an ``exchange`` one the response prefix after its prompt. ``threshold`` is
    the decision stored with the model (flag when a category's score reaches it); it
    changes no weight, so it is not hashed.
    """

    METHOD = "classifier"
    NOT_HASHED = TrainingConfig.NOT_HASHED | {"threshold"}

    target: Target = Field(
        "input",
        description="What the classifier reads: input (the prompt), output (the response, "
        "every prefix) or exchange (the response prefix after its prompt).",
    )
    prefix_stride: int = Field(
        8,
        ge=1,
        le=512,
        description="Output and exchange: train on every this-many-th token prefix of a "
        "response, and on the whole response (ignored for input).",
    )
    threshold: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="A text is flagged when a category's score reaches this; stored with the "
        "model and used for the held-out metrics (not hashed).",
    )
    learning_rate: float = Field(
        5e-5,
        gt=0.0,
        le=1.0,
        description="Peak AdamW learning rate (a full fine-tune with a fresh head).",
    )
    per_device_train_batch_size: int = Field(
        8, ge=1, description="Texts (prompts or response prefixes) per device and micro-batch."
    )
    max_length: int | None = Field(
        512,
        ge=2,
        description="Longer texts keep their last this-many tokens (the newest text of a "
        "stream, where the score is read); null keeps all.",
    )
    seed: int = Field(
        42,
        ge=0,
        le=2**32 - 1,
        description="Seed for the classification head's initialisation, the data order and "
        "dropout.",
    )
    per_device_eval_batch_size: int = Field(
        8, ge=1, description="Texts per device in evaluation (not hashed)."
    )


RUN_CONFIGS: dict[RunType, type[RunConfig]] = {
    "sft": SFTConfig,
    "pm": PMConfig,
    "dpo": DPOConfig,
    "ppo": PPOConfig,
    "rloo": RLOOConfig,
    "grpo": GRPOConfig,
    "classifier": ClassifierConfig,
}
"""The config class of each run type."""
