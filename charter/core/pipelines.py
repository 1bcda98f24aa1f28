"""The paper's procedures over a batch of items, on any :class:`Engine`.

Plain functions: items in, label fields out, no database and no queue, so they
are tested directly with a scripted engine and end to end with a real model.
Every engine call covers the whole batch (one call per step, not per item).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, assert_never

from charter.core import critique_templates, feedback_templates, prompts
from charter.core.constitution import Constitution
from charter.core.critique_templates import CritiqueTemplate
from charter.core.engine import ChoiceLogprobs, Conversation, Engine
from charter.core.feedback_templates import FeedbackTemplate
from charter.core.jobs import JobParams, JobType
from charter.core.labels import combine


@dataclass(frozen=True)
class Item:
    """One claimed work item with the text it needs."""

    item_id: int
    prompt_id: int
    position: int
    """Row number in the batch: the key of the item's random draws, so relabelling
    the same rows with the same seed draws the same principles."""
    attempt: int
    conversation: list[dict[str, str]]
    response: str | None = None
    response_a: str | None = None
    response_b: str | None = None


@dataclass
class Outcome:
    """What one item produced: label fields, or the reason it has none."""

    item: Item
    fields: dict[str, Any] = field(default_factory=dict)
    abstain_reason: str | None = None


T = TypeVar("T")


@dataclass
class Timer:
    """Seconds spent per step name, summed over the calls of a chunk."""

    seconds: dict[str, float] = field(default_factory=dict)

    def __call__(self, name: str, fn: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass(frozen=True)
class Context:
    engine: Engine
    constitution: Constitution
    params: JobParams
    seed: int
    timer: Timer

    @property
    def special(self) -> tuple[str, ...]:
        return self.engine.special_tokens

    resolve: Callable[[str], FeedbackTemplate] = feedback_templates.get
    """Feedback templates by the name the job's params give: the shipped ones, unless the
    caller (a worker) also knows the project's own."""

    resolve_critique: Callable[[str], CritiqueTemplate] = critique_templates.get
    """Critique templates by name, likewise."""

    @property
    def template(self) -> FeedbackTemplate:
        return self.resolve(self.params.feedback_template)

    @property
    def critique_template(self) -> CritiqueTemplate:
        return self.resolve_critique(self.params.critique_template)

    def generate(
        self, name: str, conversations: Sequence[Conversation], *purpose: object
    ) -> list[str]:
        """One batched call with the job's sampling; its seed depends only on the job
        and the purpose, so a rerun draws the same texts."""
        if not conversations:
            return []
        seed = prompts.derive_seed(self.seed, name, *purpose)
        sampling = self.params.sampling
        return self.timer(name, lambda: self.engine.generate(conversations, sampling, seed=seed))


def _initial_responses(ctx: Context, items: Sequence[Item], chunk_key: object) -> list[str]:
    """Supplied responses where given, else one greedy-or-sampled policy response."""
    missing = [i for i, item in enumerate(items) if item.response is None]
    generated = ctx.generate(
        "response",
        [prompts.response_conversation(items[i].conversation, ctx.special) for i in missing],
        chunk_key,
    )
    responses = [item.response or "" for item in items]
    for i, text in zip(missing, generated, strict=True):
        responses[i] = text
    return responses


def sl_cai(
    ctx: Context, items: Sequence[Item], chunk_key: object, *, rounds: int, revise: bool = True
) -> list[Outcome]:
    """Response, then ``rounds`` of critique (random principle) -> revision."""
    responses = _initial_responses(ctx, items, chunk_key)
    latest = list(responses)
    history: list[list[dict[str, Any]]] = [[] for _ in items]
    for r in range(rounds):
        steps = [
            prompts.critique_step(
                ctx.constitution,
                prompts.draw(
                    ctx.constitution.critique_principles,
                    prompts.derive_seed(ctx.seed, item.position, "critique", r),
                ),
                item.conversation,
                latest[i],
                few_shot=ctx.params.few_shot,
                special=ctx.special,
                template=ctx.critique_template,
            )
            for i, item in enumerate(items)
        ]
        critiques = ctx.generate("critique", [s.critique() for s in steps], chunk_key, r)
        revisions = (
            ctx.generate(
                "revision",
                [s.revision(c, ctx.special) for s, c in zip(steps, critiques, strict=True)],
                chunk_key,
                r,
            )
            if revise
            else [None] * len(items)
        )
        for i, (step, critique, revision) in enumerate(
            zip(steps, critiques, revisions, strict=True)
        ):
            history[i].append(
                {
                    "round": r + 1,
                    "principle_id": step.principle.id,
                    "critique_request": step.principle.critique,
                    "critique": critique,
                    "revision_request": step.principle.revision if revise else None,
                    "revision": revision,
                }
            )
            if revision is not None:
                latest[i] = revision
    outcomes = []
    for i, item in enumerate(items):
        final = latest[i] if revise else history[i][-1]["critique"]
        outcomes.append(
            Outcome(
                item,
                {
                    "response": responses[i],
                    "completion": final,
                    "rounds": history[i],
                    "principle_ids": [h["principle_id"] for h in history[i]],
                },
            )
        )
    return outcomes


def generate(ctx: Context, items: Sequence[Item], chunk_key: object) -> list[Outcome]:
    """One response per prompt, with the job's sampling and system prompt: the policy's
    answer as it is (``completion``), for evaluation."""
    match ctx.params.system_prompt:
        case "default":
            system = prompts.SYSTEM
        case "constitution":
            system = prompts.constitution_system(ctx.constitution)
        case other:
            assert_never(other)
    texts = ctx.generate(
        "response",
        [prompts.response_conversation(i.conversation, ctx.special, system) for i in items],
        chunk_key,
    )
    return [Outcome(item, {"completion": text}) for item, text in zip(items, texts, strict=True)]


def _pairs(ctx: Context, items: Sequence[Item], chunk_key: object) -> list[tuple[str, str]]:
    """Supplied pairs where given, else two sampled policy responses."""
    missing = [i for i, item in enumerate(items) if item.response_a is None]
    conversations = [
        prompts.response_conversation(items[i].conversation, ctx.special) for i in missing
    ]
    first = ctx.generate("response", conversations, chunk_key, "a")
    second = ctx.generate("response", conversations, chunk_key, "b")
    pairs = [(item.response_a or "", item.response_b or "") for item in items]
    for i, a, b in zip(missing, first, second, strict=True):
        pairs[i] = (a, b)
    return pairs


def _score(
    ctx: Context, orders: dict[str, list[list[dict[str, str]]]], chunk_key: object
) -> dict[str, tuple[list[ChoiceLogprobs], list[str | None]]]:
    """A/B log-probs for each order's feedback prompts, after a chain of thought if asked.

    Reasoning is sampled per order (its seed names the order); the answers of every
    order are then read in ONE engine call, so the engine plans its buckets over the
    whole chunk, both orders together: the more rows a call has, the closer in
    length its buckets' rows and the less padding it computes.
    """
    reasoning: dict[str, list[str | None]] = {}
    prefixes: list[str] = []
    conversations: list[list[dict[str, str]]] = []
    for order, convs in orders.items():
        if ctx.params.chain_of_thought:
            reasoning[order] = list(ctx.generate("reasoning", convs, chunk_key, order))
            prefixes += [
                prompts.cot_answer_prefix(r or "", ctx.special, ctx.template)
                for r in reasoning[order]
            ]
        else:
            reasoning[order] = [None] * len(convs)
            prefixes += [prompts.answer_prefix(ctx.template)] * len(convs)
        conversations += convs
    logprobs = ctx.timer("score", lambda: ctx.engine.choice_logprobs(conversations, prefixes))
    out = {}
    start = 0
    for order, convs in orders.items():
        out[order] = (logprobs[start : start + len(convs)], reasoning[order])
        start += len(convs)
    return out


def rl_cai(ctx: Context, items: Sequence[Item], chunk_key: object) -> list[Outcome]:
    """Two responses, a random comparison principle, and the soft A/B label."""
    pairs = _pairs(ctx, items, chunk_key)
    chosen = ctx.params.principle
    principles = [
        ctx.constitution.comparison_principle(chosen)
        if chosen is not None
        else prompts.draw(
            ctx.constitution.comparison_principles,
            prompts.derive_seed(ctx.seed, item.position, "compare"),
        )
        for item in items
    ]

    def feedback(swapped: bool) -> list[list[dict[str, str]]]:
        return [
            prompts.feedback_conversation(
                ctx.constitution,
                principle,
                item.conversation,
                *((b, a) if swapped else (a, b)),
                chain_of_thought=ctx.params.chain_of_thought,
                few_shot=ctx.params.few_shot,
                special=ctx.special,
                template=ctx.template,
                neutralised=ctx.params.neutralise,
            )
            for item, principle, (a, b) in zip(items, principles, pairs, strict=True)
        ]

    orders = {"forward": feedback(False)}
    if ctx.params.swap:
        orders["swapped"] = feedback(True)
    scored = _score(ctx, orders, chunk_key)
    forward, reasoning_f = scored["forward"]
    swapped: Sequence[ChoiceLogprobs | None]
    swapped, reasoning_s = scored.get("swapped", ([None] * len(items), [None] * len(items)))
    band = ctx.params.cot_band if ctx.params.chain_of_thought else None
    outcomes = []
    for i, item in enumerate(items):
        other = swapped[i]
        verdict = combine(forward[i], other, min_mass=ctx.params.min_choice_mass, band=band)
        fields = {
            "response_a": pairs[i][0],
            "response_b": pairs[i][1],
            "p_a": verdict.p_a,
            "p_a_forward": verdict.p_a_forward,
            "p_a_swapped": verdict.p_a_swapped,
            "swap_disagreement": verdict.disagreement,
            "choice_mass": verdict.mass,
            "principle_ids": [principles[i].id],
            "reasoning": (
                {"forward": reasoning_f[i], "swapped": reasoning_s[i]}
                if ctx.params.chain_of_thought
                else None
            ),
            "choice_logprobs": {
                "forward": [forward[i].a, forward[i].b],
                "swapped": None if other is None else [other.a, other.b],
            },
        }
        outcomes.append(Outcome(item, fields, verdict.abstain_reason))
    return outcomes


def run(ctx: Context, job_type: JobType, items: Sequence[Item], chunk_key: object) -> list[Outcome]:
    """Dispatch one batch of items to the procedure of its job type.

    Exhaustive: a job type without a case here fails mypy, and raises at run time
    instead of being labelled by another type's procedure.
    """
    match job_type:
        case JobType.SL_CAI:
            return sl_cai(ctx, items, chunk_key, rounds=ctx.params.rounds)
        case JobType.REVISE:
            return sl_cai(ctx, items, chunk_key, rounds=1)
        case JobType.CRITIQUE:
            return sl_cai(ctx, items, chunk_key, rounds=1, revise=False)
        case JobType.RL_CAI | JobType.COMPARE:
            return rl_cai(ctx, items, chunk_key)
        case JobType.GENERATE:
            return generate(ctx, items, chunk_key)
        case _:
            assert_never(job_type)
