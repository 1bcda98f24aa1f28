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
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from charter.core.constitution import canonical_json

Message = dict[str, str]
"""One chat turn: ``{"role": "system" | "user" | "assistant", "content": ...}``."""

Conversation = Sequence[Message]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one generation. Stored with every label that used it."""

    max_tokens: int = 256
    """Upper bound on generated tokens per sequence."""
    temperature: float = 0.0
    """0 means greedy decoding; > 0 samples from the softened distribution."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 disables it."""
    seed: int | None = None
    """Seed for the sampler; the same seed, batch and model give the same text."""

    def __post_init__(self) -> None:
        if not 1 <= self.max_tokens <= 8192:
            raise ValueError("max_tokens must be in [1, 8192]")
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError("temperature must be in [0, 5]")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def compute_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.as_dict()).encode()).hexdigest()[:16]


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
    """A loaded model that serves batched requests. One per worker process."""

    engine_name: str
    """Backend name recorded with labels: ``transformers``, ``vllm`` or ``scripted``."""
    model_name: str
    """The name the model is known by in settings and jobs."""
    model_revision: str
    """A hash of the weights/config actually loaded, recorded with labels."""
    special_tokens: tuple[str, ...]
    """Control-token strings of this tokenizer, neutralised in user text."""

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[str]:
        """Continue each conversation with one assistant turn; texts in input order."""
        ...

    def choice_logprobs(
        self,
        conversations: Sequence[Conversation],
        assistant_prefixes: Sequence[str],
        choices: tuple[str, str] = ("A", "B"),
    ) -> list[ChoiceLogprobs]:
        """Log-probs of each choice letter as the next token after the assistant prefix.

        The prompt is the chat template of the conversation with a generation prompt,
        followed by the prefix (e.g. ``"The answer is: ("``). Nothing is sampled.
        """
        ...
