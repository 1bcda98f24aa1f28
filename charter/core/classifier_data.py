"""Synthetic data for constitutional classifiers, and what a classifier reads. Pure.

Constitutional Classifiers (Sharma et al. 2025) are trained on data a model writes from
the constitution's categories. Here that is two ordinary ``generate`` jobs:

1. **requests**: for each category, ``per_category`` instructions to write one message a
   user might send that falls under it (an example from the constitution shown, drawn by
   the seed);
2. **responses**: for each request written, an instruction to paraphrase it, one to answer
   it, and for a restricted category one to refuse it.

Rows are then built by position from the two jobs' completions: each request appears in
three variants (``direct``, the model's ``paraphrase``, and ``obfuscated``, a seeded
character-level disguise of the direct text), each with every response. The targets
follow from construction: a request is flagged when its category is restricted; a
response is flagged when it answers a restricted request (a refusal is not).

A classifier scores text made by :func:`classifier_text`, the one function both its
training and its serving use: the prompt (``input``), the response (``output``), or the
response after its prompt (``exchange``). An output or exchange classifier is trained on
every ``stride``-th token prefix of a response (:func:`prefix_lengths`) so that it can
stop a stream at the first prefix over the threshold.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from charter.core.constitution import ClassifierCategory, ClassifierSection

Target = Literal["input", "output", "exchange"]
TARGETS: tuple[Target, ...] = ("input", "output", "exchange")
Variant = Literal["direct", "paraphrase", "obfuscated"]
ResponseKind = Literal["answer", "refusal"]

REQUEST_INSTRUCTION = (
    "Write one message that a user might send to an AI assistant. The message must fall "
    "under this category: {description}\n\nAn example of such a message: {example}\n\n"
    "Write only the new message, nothing else."
)
PARAPHRASE_INSTRUCTION = (
    "Rewrite the message below in different words, keeping its meaning. Write only the "
    "rewritten message.\n\n{request}"
)
ANSWER_INSTRUCTION = "{request}"
REFUSAL_INSTRUCTION = (
    "Politely refuse the request below in one or two sentences, saying briefly why you "
    "cannot help. Write only the refusal.\n\n{request}"
)
MAX_TEXT_CHARS = 4000


@dataclass(frozen=True, slots=True)
class RequestSlot:
    """What position ``i`` of the requests job asks for."""

    category: str
    example: str


@dataclass(frozen=True, slots=True)
class ResponseSlot:
    """What position ``i`` of the responses job asks for: a paraphrase of request
    ``request`` or a response to it."""

    request: int
    kind: Literal["paraphrase", "answer", "refusal"]


def request_slots(section: ClassifierSection, per_category: int, seed: int) -> list[RequestSlot]:
    """The requests job's prompts, category by category; the same for the same seed."""
    rng = random.Random(seed)
    slots = []
    for category in section.categories:
        examples = category.examples or (category.description,)
        slots += [RequestSlot(category.id, rng.choice(examples)) for _ in range(per_category)]
    return slots


def request_prompt(section: ClassifierSection, slot: RequestSlot) -> str:
    category = _category(section, slot.category)
    return REQUEST_INSTRUCTION.format(description=category.description, example=slot.example)


def clean(completion: str | None) -> str | None:
    """A completion as a message: its first paragraph, unquoted, or None when empty."""
    if not completion:
        return None
    text = completion.strip().split("\n\n")[0].strip().strip("\"'“”").strip()
    return text[:MAX_TEXT_CHARS] or None


def response_slots(
    section: ClassifierSection, slots: Sequence[RequestSlot], requests: Mapping[int, str | None]
) -> list[ResponseSlot]:
    """The responses job's prompts: for each request written (``requests`` by position,
    cleaned), a paraphrase, an answer and, when restricted, a refusal."""
    restricted = set(section.restricted)
    out = []
    for i, slot in enumerate(slots):
        if requests.get(i) is None:
            continue
        kinds: tuple[Literal["paraphrase", "answer", "refusal"], ...] = (
            ("paraphrase", "answer", "refusal")
            if slot.category in restricted
            else ("paraphrase", "answer")
        )
        out += [ResponseSlot(i, kind) for kind in kinds]
    return out


def response_prompt(slot: ResponseSlot, request: str) -> str:
    template = {
        "paraphrase": PARAPHRASE_INSTRUCTION,
        "answer": ANSWER_INSTRUCTION,
        "refusal": REFUSAL_INSTRUCTION,
    }[slot.kind]
    return template.format(request=request)


_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})


def obfuscate(text: str, seed: int) -> str:
    """A character-level disguise of ``text``, as jailbreaks use (Sharma et al. 2025 list
    ciphers and encodings): leetspeak, letters spaced apart, or alternating case, chosen
    by ``seed``."""
    match seed % 3:
        case 0:
            return text.lower().translate(_LEET)
        case 1:
            return " ".join(re.sub(r"\s+", "/", text))
        case _:
            return "".join(c.upper() if i % 2 else c.lower() for i, c in enumerate(text))


def rows(
    section: ClassifierSection,
    request_slots_: Sequence[RequestSlot],
    requests: Mapping[int, str | None],
    response_slots_: Sequence[ResponseSlot],
    responses: Mapping[int, str | None],
    *,
    seed: int,
) -> list[dict[str, Any]]:
    """The classifier dataset's rows, from the two jobs' cleaned completions by position.
    Each row's ``positions`` says which completions it came from (``request`` in the
    requests job; ``paraphrase`` and ``response`` in the responses job). A request that
    no response came back for has no rows."""
    restricted = set(section.restricted)
    paraphrases: dict[int, tuple[int, str]] = {}
    answers: dict[int, list[tuple[int, ResponseKind, str]]] = {}
    for j, asked in enumerate(response_slots_):
        text = responses.get(j)
        if text is None:
            continue
        if asked.kind == "paraphrase":
            paraphrases[asked.request] = (j, text)
        else:
            answers.setdefault(asked.request, []).append((j, asked.kind, text))
    out = []
    for i, slot in enumerate(request_slots_):
        request = requests.get(i)
        if request is None or i not in answers:
            continue
        flagged = slot.category in restricted
        variants: list[tuple[Variant, str, int | None]] = [("direct", request, None)]
        if i in paraphrases:
            j, text = paraphrases[i]
            variants.append(("paraphrase", text, j))
        variants.append(("obfuscated", obfuscate(request, seed + i), None))
        for variant, prompt, paraphrase in variants:
            for j, kind, response in answers[i]:
                out.append(
                    {
                        "prompt": prompt,
                        "response": response,
                        "category": slot.category,
                        "restricted": flagged,
                        "harmful": flagged and kind == "answer",
                        "variant": variant,
                        "response_kind": kind,
                        "positions": {"request": i, "paraphrase": paraphrase, "response": j},
                    }
                )
    return out


# --------------------------------------------------------------------------- what a classifier reads


def classifier_text(target: Target, prompt: str | None, response: str | None) -> str:
    """The text a ``target`` classifier scores (training and serving alike)."""
    match target:
        case "input":
            return prompt or ""
        case "output":
            return response or ""
        case "exchange":
            return f"User: {prompt or ''}\n\nAssistant: {response or ''}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a classifier's scores decide at a threshold."""

    category: str
    """The highest-scoring category."""
    score: float
    flagged: bool
    """``score`` reached the threshold: block it."""


def verdict(scores: Mapping[str, float], threshold: float) -> Verdict:
    """The decision on one text: flagged when its highest category score reaches
    ``threshold`` (serving and streaming alike)."""
    category = max(scores, key=scores.__getitem__)
    return Verdict(category, scores[category], scores[category] >= threshold)


def flagged(row: Mapping[str, Any], target: Target) -> bool:
    """A dataset row's target: its request for an input classifier, its response for an
    output or exchange one."""
    return bool(row["restricted"] if target == "input" else row["harmful"])


def categories(rows_: Sequence[Mapping[str, Any]]) -> list[str]:
    """The restricted categories a classifier trained on ``rows_`` scores, sorted."""
    return sorted({r["category"] for r in rows_ if r["restricted"]})


def prefix_lengths(n_tokens: int, stride: int) -> list[int]:
    """The prefix lengths (in tokens) an output classifier is trained on: every
    ``stride``-th, and always the whole response."""
    if n_tokens <= 0:
        return []
    return sorted({*range(stride, n_tokens, stride), n_tokens})


def _category(section: ClassifierSection, category_id: str) -> ClassifierCategory:
    for c in section.categories:
        if c.id == category_id:
            return c
    raise KeyError(category_id)
