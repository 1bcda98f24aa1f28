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

from charter.core import critique_templates, feedback_templates
from charter.core.constitution import (
    ComparisonExample,
    ComparisonPrinciple,
    Constitution,
    CritiqueExample,
    CritiquePrinciple,
)
from charter.core.critique_templates import CritiqueTemplate
from charter.core.engine import Message, plain_prompt
from charter.core.feedback_templates import FeedbackTemplate

TEMPLATE_VERSION = "2026-12-02.1"

SYSTEM = critique_templates.SYSTEM
DELIMITERS = feedback_templates.CHAT.delimiters
"""Broken in every untrusted text (the default feedback template's tags)."""
ANSWER_PREFIX = feedback_templates.CHAT.answer_prefix
"""The default template's answer cue; each template declares its own."""
COT_ANSWER_PREFIX = feedback_templates.CHAT.cot_answer_prefix


def template_hash(
    template: FeedbackTemplate,
    critique: CritiqueTemplate = critique_templates.DEFAULT_TEMPLATE,
) -> str:
    """What a label records as ``template_hash``: every prompt text it could have seen
    (the SL-CAI system turn, the feedback template, the critique template unless it is
    the default, which the first part already covers), and this module's version."""
    parts: tuple[str, ...] = (TEMPLATE_VERSION, SYSTEM, template.fingerprint())
    if not critique.is_default:
        parts += (critique.fingerprint(),)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _ref(name: str, version: str, built_in: bool) -> str:
    return name if built_in else f"{name}@{version}"


def template_version(
    template: FeedbackTemplate,
    critique: CritiqueTemplate = critique_templates.DEFAULT_TEMPLATE,
) -> str:
    """What a label records as ``template_version``: this module's version, then the
    feedback template's name when it is not the default and ``critique:`` and the
    critique template's when that is not (``name@version`` for a project's own)."""
    version = TEMPLATE_VERSION
    if template.name != feedback_templates.DEFAULT:
        built_in = template.name in feedback_templates.BUILT_IN
        version += "/" + _ref(template.name, template.version, built_in)
    if critique.name != critique_templates.DEFAULT:
        built_in = critique.name in critique_templates.BUILT_IN
        version += "/critique:" + _ref(critique.name, critique.version, built_in)
    return version


TEMPLATE_HASH = template_hash(feedback_templates.CHAT)

_CONTROL_LIKE = re.compile(r"<\|[^|<>]{0,64}\|>")
_ZWSP = "\u200b"


def _break(token: str) -> str:
    return token[0] + _ZWSP + token[1:]


def neutralise(
    text: str, special_tokens: Sequence[str] = (), delimiters: Sequence[str] = DELIMITERS
) -> str:
    """Make control tokens and template delimiters inert inside untrusted text.

    A zero-width space is inserted after the first character, so the text still
    reads the same to a person but can no longer tokenise as a control token or
    close one of the template's delimiters.
    """
    for token in sorted({*special_tokens, *delimiters}, key=len, reverse=True):
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


def _clean(
    conversation: Sequence[Message], special: Sequence[str], delimiters: Sequence[str] = DELIMITERS
) -> list[Message]:
    return [
        {"role": m["role"], "content": neutralise(m["content"], special, delimiters)}
        for m in conversation
    ]


def response_conversation(
    conversation: Sequence[Message], special: Sequence[str] = (), system: str = SYSTEM
) -> list[Message]:
    """What the policy model sees to write its (initial) response."""
    return [{"role": "system", "content": system}, *_clean(conversation, special)]


def constitution_system(constitution: Constitution) -> str:
    """The policy's system prompt with the constitution as guidance: its description and
    the questions its comparisons ask (else its revision requests), which a good answer
    satisfies. For a generate job's ``system_prompt: constitution``."""
    guidance = [p.text for p in constitution.comparison_principles] or [
        p.revision for p in constitution.critique_principles
    ]
    lines = [SYSTEM, "", "Answer in keeping with this constitution."]
    if constitution.description:
        lines.append(constitution.description)
    if guidance:
        lines += ["", "Give the answer that each of these would choose:"]
        lines += [f"- {text}" for text in guidance]
    return "\n".join(lines)


def _requests(
    template: CritiqueTemplate,
    conversation: Sequence[Message],
    response: str,
    critique_request: str,
) -> dict[str, object]:
    return {
        "conversation": _render_conversation(conversation),
        "messages": [dict(m) for m in conversation],
        "response": response,
        "critique_request": critique_request,
    }


def _critique_shots(
    examples: Sequence[CritiqueExample], template: CritiqueTemplate
) -> list[Message]:
    turns: list[Message] = []
    for ex in examples:
        shown: list[Message] = [{"role": "user", "content": ex.prompt}]
        known = _requests(template, shown, ex.response, ex.critique_request)
        revision = template.render_revision(
            **known, critique=ex.critique, revision_request=ex.revision_request
        )
        turns += [
            *shown,
            {"role": "assistant", "content": ex.response},
            {"role": "user", "content": template.render_critique(**known)},
            {"role": "assistant", "content": ex.critique},
            {"role": "user", "content": revision},
            {"role": "assistant", "content": ex.revision},
        ]
    return turns


@dataclass(frozen=True)
class CritiqueStep:
    """The two conversations of one SL-CAI round (the revision one needs the critique)."""

    principle: CritiquePrinciple
    base: list[Message]
    template: CritiqueTemplate
    known: dict[str, object]
    """The template's variables for this round (untrusted text already neutralised)."""

    def critique(self) -> list[Message]:
        return [
            *self.base,
            {"role": "user", "content": self.template.render_critique(**self.known)},
        ]

    def revision(self, critique: str, special: Sequence[str] = ()) -> list[Message]:
        critique = neutralise(critique, special, (*DELIMITERS, *self.template.delimiters))
        request = self.template.render_revision(
            **self.known, critique=critique, revision_request=self.principle.revision
        )
        return [
            *self.critique(),
            {"role": "assistant", "content": critique},
            {"role": "user", "content": request},
        ]


def critique_step(
    constitution: Constitution,
    principle: CritiquePrinciple,
    conversation: Sequence[Message],
    response: str,
    *,
    few_shot: bool = True,
    special: Sequence[str] = (),
    template: CritiqueTemplate = critique_templates.DEFAULT_TEMPLATE,
) -> CritiqueStep:
    """One round: critique ``response`` (the latest answer) against ``principle``, with
    the request turns of ``template``.

    Each round restarts from the original conversation and the latest revision
    rather than chaining every earlier round, which keeps prompts short enough
    for small models while still critiquing the newest text.
    """
    delimiters = (*DELIMITERS, *template.delimiters)
    shots = _critique_shots(constitution.critique_examples, template) if few_shot else []
    cleaned = _clean(conversation, special, delimiters)
    answer = neutralise(response, special, delimiters)
    base = [
        {"role": "system", "content": template.system},
        *shots,
        *cleaned,
        {"role": "assistant", "content": answer},
    ]
    known = _requests(template, cleaned, answer, principle.critique)
    return CritiqueStep(principle=principle, base=base, template=template, known=known)


def _render_conversation(conversation: Sequence[Message]) -> str:
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n".join(f"{names.get(m['role'], m['role'])}: {m['content']}" for m in conversation)


def _question(
    template: FeedbackTemplate,
    conversation: Sequence[Message],
    principle: str,
    response_a: str,
    response_b: str,
    cot: bool,
) -> str:
    return template.render(
        conversation=_render_conversation(conversation),
        messages=[dict(m) for m in conversation],
        principle=principle,
        response_a=response_a,
        response_b=response_b,
        instruction=template.cot_instruction if cot else template.instruction,
    )


def _shots(template: FeedbackTemplate, examples: Sequence[ComparisonExample], cot: bool):  # type: ignore[no-untyped-def]
    """Each worked example: its question, and its answer as the model should give it."""
    for ex in examples:
        question = _question(
            template,
            [{"role": "user", "content": ex.prompt}],
            ex.principle,
            ex.response_a,
            ex.response_b,
            cot,
        )
        if cot and ex.reasoning:
            answer = (
                f"{template.reasoning_lead}{ex.reasoning}{template.cot_answer_prefix}{ex.answer})"
            )
        else:
            answer = f"{template.answer_prefix}{ex.answer})"
        yield question, answer


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
    template: FeedbackTemplate = feedback_templates.CHAT,
    neutralised: bool = True,
) -> list[Message]:
    """The multiple-choice feedback prompt in ``template``'s format: chat turns, or one
    plain-text message (:func:`charter.core.engine.plain_prompt`). The platform appends
    the answer prefix itself: :func:`answer_prefix` or :func:`cot_answer_prefix`.

    ``neutralised=False`` leaves the untrusted text as it is: only a judge evaluation
    does that, to measure what neutralisation is worth against injected payloads."""
    delimiters = template.delimiters
    examples = constitution.comparison_examples if few_shot else ()
    shots = list(_shots(template, examples, chain_of_thought))
    if neutralised:
        conversation = _clean(conversation, special, delimiters)
        response_a = neutralise(response_a, special, delimiters)
        response_b = neutralise(response_b, special, delimiters)
    question = _question(  # the principle and the examples are the project's own text
        template, conversation, principle.text, response_a, response_b, chain_of_thought
    )
    if template.format == "plain":
        blocks = [q + a for q, a in shots] + [question]
        return plain_prompt(template.separator.join(blocks))
    turns: list[Message] = [{"role": "system", "content": template.system or ""}]
    for q, a in shots:
        turns += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return [*turns, {"role": "user", "content": question}]


def answer_prefix(template: FeedbackTemplate = feedback_templates.CHAT) -> str:
    """The assistant prefix after which the answer letter is read, without reasoning."""
    return template.answer_prefix


def cot_answer_prefix(
    reasoning: str,
    special: Sequence[str] = (),
    template: FeedbackTemplate = feedback_templates.CHAT,
) -> str:
    """The assistant prefix after a chain of thought: the reasoning, then the answer cue."""
    reasoning = neutralise(reasoning.strip(), special, template.delimiters)
    return template.reasoning_lead + reasoning + template.cot_answer_prefix
