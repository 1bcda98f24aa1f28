"""A deterministic stand-in for a language model, for fast tests of everything around it.

Implements :class:`charter.core.engine.Engine` without loading any weights:

* ``generate`` returns ``"scripted response <8 hex>"``, the hex taken from a hash
  of the conversation and the call's seed, unless ``responses`` overrides it;
* ``choice_logprobs`` returns log-probabilities from ``choice_fn`` or, by default,
  prefers the shorter of the two options ``(A) ...`` / ``(B) ...`` found in the
  last message of the conversation.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from charter.core.constitution import canonical_json
from charter.core.engine import ChoiceLogprobs, Conversation, SamplingParams
from charter.core.engine_config import EngineConfig

ResponseFn = Callable[[Conversation, SamplingParams], "str | None"]
"""Returns the text for one conversation, or None to use the default."""
ChoiceFn = Callable[[Conversation, str, tuple[str, str]], "ChoiceLogprobs | tuple[float, float]"]
"""Returns the two log-probs for one (conversation, assistant prefix, choices)."""

DEFAULT_CHOICE_MASS = 0.9
"""Probability mass the default scorer puts on the two letters together."""


def conversation_hash(conversation: Conversation, seed: int | None = None) -> str:
    """Hex sha256 of a conversation (roles and contents) and a seed."""
    payload = {
        "messages": [{"role": m["role"], "content": m["content"]} for m in conversation],
        "seed": seed,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def _options(text: str, choices: tuple[str, str]) -> tuple[str, str] | None:
    """The last ``(A) ... (B) ...`` pair in ``text`` (B runs to the end or a blank line)."""
    a_tag, b_tag = f"({choices[0]})", f"({choices[1]})"
    a_at = text.rfind(a_tag)
    if a_at < 0:
        return None
    b_at = text.find(b_tag, a_at + len(a_tag))
    if b_at < 0:
        return None
    a_text = text[a_at + len(a_tag) : b_at].strip()
    b_text = re.split(r"\n\s*\n", text[b_at + len(b_tag) :].strip(), maxsplit=1)[0].strip()
    return a_text, b_text


def prefer_shorter(
    conversation: Conversation, assistant_prefix: str, choices: tuple[str, str]
) -> ChoiceLogprobs:
    """Default scorer: P(A) proportional to the length of B, and vice versa.

    With total letter mass 0.9; equal lengths (or no options found) give 0.45 each.
    """
    last = conversation[-1]["content"] if conversation else ""
    found = _options(last, choices)
    la, lb = (len(found[0]), len(found[1])) if found else (0, 0)
    p_a = (lb + 1) / (la + lb + 2)
    return ChoiceLogprobs(
        a=math.log(DEFAULT_CHOICE_MASS * p_a), b=math.log(DEFAULT_CHOICE_MASS * (1 - p_a))
    )


class ScriptedEngine:
    """Deterministic engine: same inputs, same outputs, no model."""

    engine_name = "scripted"
    model_revision = "scripted-1"
    special_tokens: tuple[str, ...] = ("<|im_start|>", "<|im_end|>")

    def __init__(
        self,
        *,
        model_name: str = "scripted",
        config: EngineConfig | None = None,
        responses: ResponseFn | Mapping[str, str] | None = None,
        choice_fn: ChoiceFn | None = None,
    ) -> None:
        """``config``: by default ``EngineConfig(engine="scripted")`` (its other fields
        change nothing here). ``responses``: a callable ``(conversation, params) -> str |
        None`` or a dict from the last message's content to the reply. ``choice_fn``: a
        callable ``(conversation, assistant_prefix, choices) -> ChoiceLogprobs | (a, b)``."""
        config = config or EngineConfig(engine="scripted")
        if config.engine != self.engine_name:
            raise ValueError(f"a {config.engine!r} engine config given to the scripted engine")
        self.config = config
        self.model_name = model_name
        self.responses = responses
        self.choice_fn = choice_fn
        self.calls: list[tuple[str, int]] = []
        """One ``(operation, batch size)`` entry per call, for tests."""
        self.closed = False

    def _respond(self, conversation: Conversation, params: SamplingParams, seed: int | None) -> str:
        text: Any = None
        if callable(self.responses):
            text = self.responses(conversation, params)
        elif self.responses is not None and conversation:
            text = self.responses.get(conversation[-1]["content"])
        if text is None:
            digest = conversation_hash(conversation, seed)[:8]
            text = f"scripted response {digest}"
        words = str(text).split(" ")
        return " ".join(words[: params.max_tokens])

    def generate(
        self,
        conversations: Sequence[Conversation],
        params: SamplingParams,
        *,
        seed: int | None = None,
    ) -> list[str]:
        self.calls.append(("generate", len(conversations)))
        return [self._respond(c, params, seed) for c in conversations]

    def choice_logprobs(
        self,
        conversations: Sequence[Conversation],
        assistant_prefixes: Sequence[str],
        choices: tuple[str, str] = ("A", "B"),
    ) -> list[ChoiceLogprobs]:
        if len(conversations) != len(assistant_prefixes):
            raise ValueError("conversations and assistant_prefixes differ in length")
        self.calls.append(("choice_logprobs", len(conversations)))
        fn = self.choice_fn or prefer_shorter
        out: list[ChoiceLogprobs] = []
        for conv, prefix in zip(conversations, assistant_prefixes, strict=True):
            res = fn(conv, prefix, choices)
            if not isinstance(res, ChoiceLogprobs):
                res = ChoiceLogprobs(a=float(res[0]), b=float(res[1]))
            out.append(res)
        return out

    def close(self) -> None:
        """Nothing to release: there is no model (``closed`` tells tests it was called)."""
        self.closed = True
