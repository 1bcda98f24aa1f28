"""Prompt templates for SL-CAI and RL-CAI, versioned and hashed.

Every conversation is built from the constitution and the item's text only, so
the same inputs always give the same prompt; ``TEMPLATE_HASH`` is stored with
each label. The few-shot exemplars come first and are identical across items,
so engines can compute that shared prefix once (vLLM prefix caching, the
transformers engine's shared-prefix KV reuse).

Untrusted text (prompts, responses, model output that is fed back) is
neutralised: the tokenizer's control tokens and the template's own delimiters
cannot appear in it verbatim, so it cannot pose as the template's structure.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from charter.core.constitution import (
    ComparisonExample,
    ComparisonPrinciple,
    Constitution,
    CritiqueExample,
    CritiquePrinciple,
)
from charter.core.engine import Message

TEMPLATE_VERSION = "2026-11-24.1"

SYSTEM = "You are a helpful, honest and harmless assistant."
FEEDBACK_SYSTEM = (
    "You compare two assistant responses against a principle and answer with the letter "
    "of the better one."
)
FEEDBACK_QUESTION = (
    "Consider the following conversation between a human and an assistant:\n"
    "<conversation>\n{conversation}\n</conversation>\n\n"
    "{principle}\n\n"
    "Options:\n"
    "(A) <response>\n{response_a}\n</response>\n"
    "(B) <response>\n{response_b}\n</response>\n\n"
    "{instruction}"
)
ANSWER_INSTRUCTION = "Answer with the letter of the better response."
COT_INSTRUCTION = (
    "Think it through step by step in a few sentences, then say which response is better."
)
ANSWER_PREFIX = "The answer is: ("
COT_ANSWER_PREFIX = "\n\nTherefore, the answer is: ("
DELIMITERS = ("<conversation>", "</conversation>", "<response>", "</response>")

TEMPLATE_HASH = hashlib.sha256(
    "\x1f".join(
        (
            TEMPLATE_VERSION,
            SYSTEM,
            FEEDBACK_SYSTEM,
            FEEDBACK_QUESTION,
            ANSWER_INSTRUCTION,
            COT_INSTRUCTION,
            ANSWER_PREFIX,
            COT_ANSWER_PREFIX,
        )
    ).encode()
).hexdigest()

_CONTROL_LIKE = re.compile(r"<\|[^|<>]{0,64}\|>")
_ZWSP = "\u200b"


def _break(token: str) -> str:
    return token[0] + _ZWSP + token[1:]


def neutralise(text: str, special_tokens: Sequence[str] = ()) -> str:
    """Make control tokens and template delimiters inert inside untrusted text.

    A zero-width space is inserted after the first character, so the text still
    reads the same to a person but can no longer tokenise as a control token or
    close one of the template's delimiters.
    """
    for token in sorted({*special_tokens, *DELIMITERS}, key=len, reverse=True):
        if token and token in text:
            text = text.replace(token, _break(token))
    return _CONTROL_LIKE.sub(lambda m: _break(m.group(0)), text)


def derive_seed(seed: int, *parts: object) -> int:
    """An independent 63-bit seed for one purpose (principle draw, sampling, ...)."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def draw(principles: Sequence[CritiquePrinciple] | Sequence[ComparisonPrinciple], seed: int):  # type: ignore[no-untyped-def]
    """One principle, uniformly at random from the set, reproducible from the seed."""
    if not principles:
        raise ValueError("the constitution has no principles of this kind")
    return principles[random.Random(seed).randrange(len(principles))]


def user_conversation(prompt: str | None, messages: list[dict[str, str]] | None) -> list[Message]:
    """The item's conversation: a plain prompt becomes one user turn."""
    if messages:
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if prompt is None:
        raise ValueError("an item needs a prompt or messages")
    return [{"role": "user", "content": prompt}]


def _clean(conversation: Sequence[Message], special: Sequence[str]) -> list[Message]:
    return [{"role": m["role"], "content": neutralise(m["content"], special)} for m in conversation]


def response_conversation(
    conversation: Sequence[Message], special: Sequence[str] = ()
) -> list[Message]:
    """What the policy model sees to write its (initial) response."""
    return [{"role": "system", "content": SYSTEM}, *_clean(conversation, special)]


def _critique_shots(examples: Sequence[CritiqueExample]) -> list[Message]:
    turns: list[Message] = []
    for ex in examples:
        turns += [
            {"role": "user", "content": ex.prompt},
            {"role": "assistant", "content": ex.response},
            {"role": "user", "content": ex.critique_request},
            {"role": "assistant", "content": ex.critique},
            {"role": "user", "content": ex.revision_request},
            {"role": "assistant", "content": ex.revision},
        ]
    return turns


@dataclass(frozen=True)
class CritiqueStep:
    """The two conversations of one SL-CAI round (the revision one needs the critique)."""

    principle: CritiquePrinciple
    base: list[Message]

    def critique(self) -> list[Message]:
        return [*self.base, {"role": "user", "content": self.principle.critique}]

    def revision(self, critique: str, special: Sequence[str] = ()) -> list[Message]:
        return [
            *self.critique(),
            {"role": "assistant", "content": neutralise(critique, special)},
            {"role": "user", "content": self.principle.revision},
        ]


def critique_step(
    constitution: Constitution,
    principle: CritiquePrinciple,
    conversation: Sequence[Message],
    response: str,
    *,
    few_shot: bool = True,
    special: Sequence[str] = (),
) -> CritiqueStep:
    """One round: critique ``response`` (the latest answer) against ``principle``.

    Each round restarts from the original conversation and the latest revision
    rather than chaining every earlier round, which keeps prompts short enough
    for small models while still critiquing the newest text.
    """
    shots = _critique_shots(constitution.critique_examples) if few_shot else []
    base = [
        {"role": "system", "content": SYSTEM},
        *shots,
        *_clean(conversation, special),
        {"role": "assistant", "content": neutralise(response, special)},
    ]
    return CritiqueStep(principle=principle, base=base)


def _render_conversation(conversation: Sequence[Message]) -> str:
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in conversation)


def _question(
    conversation: str, principle: str, response_a: str, response_b: str, instruction: str
) -> str:
    return FEEDBACK_QUESTION.format(
        conversation=conversation,
        principle=principle,
        response_a=response_a,
        response_b=response_b,
        instruction=instruction,
    )


def _comparison_shots(examples: Sequence[ComparisonExample], cot: bool) -> list[Message]:
    turns: list[Message] = []
    for ex in examples:
        question = _question(
            f"Human: {ex.prompt}",
            ex.principle,
            ex.response_a,
            ex.response_b,
            COT_INSTRUCTION if cot else ANSWER_INSTRUCTION,
        )
        if cot and ex.reasoning:
            answer = f"{ex.reasoning}{COT_ANSWER_PREFIX}{ex.answer})"
        else:
            answer = f"{ANSWER_PREFIX}{ex.answer})"
        turns += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return turns


def feedback_conversation(
    constitution: Constitution,
    principle: ComparisonPrinciple,
    conversation: Sequence[Message],
    response_a: str,
    response_b: str,
    *,
    chain_of_thought: bool = False,
    few_shot: bool = True,
    special: Sequence[str] = (),
) -> list[Message]:
    """The multiple-choice feedback prompt. The platform appends the answer prefix itself:
    :data:`ANSWER_PREFIX` (or, after reasoning, :data:`COT_ANSWER_PREFIX`)."""
    shots = (
        _comparison_shots(constitution.comparison_examples, chain_of_thought) if few_shot else []
    )
    question = _question(
        _render_conversation(_clean(conversation, special)),
        principle.text,
        neutralise(response_a, special),
        neutralise(response_b, special),
        COT_INSTRUCTION if chain_of_thought else ANSWER_INSTRUCTION,
    )
    return [
        {"role": "system", "content": FEEDBACK_SYSTEM},
        *shots,
        {"role": "user", "content": question},
    ]


def cot_answer_prefix(reasoning: str, special: Sequence[str] = ()) -> str:
    """The assistant prefix after a chain of thought: the reasoning, then the answer cue."""
    return neutralise(reasoning.strip(), special) + COT_ANSWER_PREFIX
