"""The inference-engine interface every backend implements (vLLM-shaped).

Batch in, results in input order. Two operations cover the whole paper:
chat generation (responses, critiques, revisions, chain-of-thought) and reading
the next-token log-probabilities of answer letters after a fixed assistant
prefix (the RL-CAI feedback label). No backend code lives here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from charter.core.constitution import canonical_json
from charter.core.engine_config import EngineConfig

Message = dict[str, str]
"""One chat turn: ``{"role": "system" | "user" | "assistant", "content": ...}``."""

Conversation = Sequence[Message]

PLAIN_ROLE = "text"
"""The role of a plain-text prompt: a conversation of one message with this role is
tokenised as its content alone, with no chat template (a pretrained model's format);
generation continues the text, and an assistant prefix is appended to it."""


def plain_prompt(text: str) -> list[Message]:
    """A prompt that engines take as plain text, not as chat turns."""
    return [{"role": PLAIN_ROLE, "content": text}]


def is_plain(conversation: Conversation) -> bool:
    return len(conversation) == 1 and conversation[0].get("role") == PLAIN_ROLE


class SamplingParams(BaseModel):
    """How a job samples its generated text (responses, critiques, revisions, reasoning).

    The one sampling type: a job's ``params.sampling`` (validated at the API, whose
    bounds these are) is what the pipelines hand to ``Engine.generate``. The sampler's
    seed is not part of it: each call gets its own, derived from the job's seed and
    the call's purpose (``charter.core.pipelines``), and is passed next to these
    parameters. So :meth:`compute_hash`, which every label whose job sampled records
    as ``sampling_hash``, is the hash of the job-level parameters and the same for
    every label of a job; the job's seed is recorded separately (``labels.seed``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(
        default=192, ge=1, le=4096, description="Upper bound on generated tokens per sequence."
    )
    temperature: float = Field(
        default=0.7,
        ge=0.0,
        le=2.0,
        description="0 means greedy decoding; > 0 samples from the softened distribution.",
    )
    top_p: float = Field(
        default=0.95, gt=0.0, le=1.0, description="Nucleus sampling mass; 1.0 disables it."
    )

    def compute_hash(self) -> str:
        """16 hex digits of the sha256 of the canonical JSON of all the fields."""
        payload = canonical_json(self.model_dump(mode="json"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ChoiceLogprobs:
    """Full-vocabulary log-probabilities of the two answer letters at one position.

    ``-inf`` means the engine could not see the token (e.g. outside vLLM's top-k),
    which the label math treats as no probability mass.
    """

    a: float
    b: float

    @property
    def mass(self) -> float:
        return math.exp(self.a) + math.exp(self.b)


@runtime_checkable
class Engine(Protocol):
    """A loaded model that serves batched requests. One per model a worker process
    serves."""

    engine_name: str
    """Backend name recorded with labels: ``transformers``, ``vllm`` or ``scripted``."""
    model_name: str
    """The name the model is known by in settings and jobs."""
    model_revision: str
    """A hash of the weights/config actually loaded, recorded with labels."""
    special_tokens: tuple[str, ...]
    """Control-token strings of this tokenizer, neutralised in user text."""

    @property
    def config(self) -> EngineConfig:
        """The configuration it was built with; labels record its hash."""
        ...

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        seed: int | None = None,
    ) -> list[str]:
        """Continue each conversation with one assistant turn (a :func:`plain_prompt`:
        its text); texts in input order.

        ``seed`` seeds the sampler for this call: the same seed, batch and model give
        the same texts; None leaves the draws to the engine's own generator.
        """
        ...

    def choice_logprobs(
        self,
        conversations: Sequence[Conversation],
        assistant_prefixes: Sequence[str],
        choices: tuple[str, str] = ("A", "B"),
    ) -> list[ChoiceLogprobs]:
        """Log-probs of each choice letter as the next token after the assistant prefix.

        The prompt is the chat template of the conversation with a generation prompt
        (or, for :func:`plain_prompt`, its text), followed by the prefix (e.g.
        ``"The answer is: ("``). Nothing is sampled.
        """
        ...

    def close(self) -> None:
        """Release the model's memory, host and accelerator: the engine serves nothing
        after. A worker unloads an on-demand model so before it loads another."""
        ...
