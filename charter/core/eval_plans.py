"""What a judge evaluation asks of the workers: judge configurations, the jobs they
become, and the adversarial variants of a gold set. Pure data.

An evaluation scores one gold set with each judge configuration as an ordinary
``compare`` job, so a judge is measured on the very code path that labels at scale.
With injection, each configuration also scores the *variants*: every gold item
(up to ``max_items``) once per attack, the payload appended to its wrong response
(:func:`charter.core.injection.variant_pair`). With ``defences_off`` both are scored a
second time with neutralisation off; together with each job's forward order alone
(swap off) that gives every combination of the two defences from four jobs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from charter.core import feedback_templates, injection
from charter.core.engine import SamplingParams
from charter.core.jobs import BUILTIN_SMOLLM2, JobParams

Variant = Literal["clean", "injected", "clean-undefended", "injected-undefended"]
VARIANTS: tuple[Variant, ...] = ("clean", "injected", "clean-undefended", "injected-undefended")

DEFENCE_NAMES = {
    "all": "all defences",
    "no_swap": "no swap",
    "no_neutralise": "no neutralising",
    "none": "no defences",
}
"""The combinations of the two defences a report gives flips for (neutralising untrusted
text, and swap debiasing), by their key in the report."""

CONFIG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


class JudgeConfig(BaseModel):
    """One judge: model, template, constitution (or one principle of it) and knobs."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(
        default=None,
        pattern=CONFIG_NAME.pattern,
        description="How the report names it; 'config-<n>' (1-based) if omitted.",
    )
    model: str = Field(
        default=BUILTIN_SMOLLM2, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._/-]+$"
    )
    constitution: str = Field(
        min_length=1, max_length=80, description="name or name@version; pinned at submission"
    )
    feedback_template: str = Field(default=feedback_templates.DEFAULT, max_length=40)
    principle: str | None = Field(
        default=None,
        max_length=64,
        description="Judge under this one comparison principle instead of a random draw.",
    )
    few_shot: bool = True
    chain_of_thought: bool = False
    cot_band: tuple[float, float] = (0.4, 0.6)
    swap: bool = True
    min_choice_mass: float = Field(default=0.5, ge=0.0, le=1.0)
    sampling: SamplingParams = Field(default_factory=SamplingParams)

    def job_params(self, *, neutralise: bool = True) -> JobParams:
        """The ``compare`` job's params (JobParams checks the band and the template ref)."""
        return JobParams(
            chain_of_thought=self.chain_of_thought,
            swap=self.swap,
            cot_band=self.cot_band,
            min_choice_mass=self.min_choice_mass,
            few_shot=self.few_shot,
            feedback_template=self.feedback_template,
            principle=self.principle,
            neutralise=neutralise,
            sampling=self.sampling,
        )


class InjectionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    attacks: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=len(injection.SUITE),
        description="Attack ids from GET /v1/evals/attacks; the whole suite if omitted.",
    )
    max_items: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Gold items (the first ones) that get the attacks: items x attacks variants.",
    )
    defences_off: bool = Field(
        default=True,
        description="Also score clean and injected pairs with neutralisation off.",
    )

    @field_validator("attacks")
    @classmethod
    def _known(cls, attacks: list[str] | None) -> list[str] | None:
        if attacks is not None:
            known = {a.id for a in injection.SUITE}
            unknown = [a for a in attacks if a not in known]
            if unknown:
                raise ValueError(f"unknown attacks {unknown}; GET /v1/evals/attacks lists them")
            if len(set(attacks)) != len(attacks):
                raise ValueError("attacks must not repeat")
        return attacks

    def chosen(self) -> tuple[injection.Attack, ...]:
        if self.attacks is None:
            return injection.SUITE
        return tuple(injection.get(a) for a in self.attacks)


def named(configs: Sequence[JudgeConfig]) -> list[JudgeConfig]:
    """The configurations with every name filled in; ``ValueError`` on a repeated name."""
    out = [
        c if c.name is not None else c.model_copy(update={"name": f"config-{i + 1}"})
        for i, c in enumerate(configs)
    ]
    names = [c.name for c in out]
    repeated = sorted({n for n in names if names.count(n) > 1 if n is not None})
    if repeated:
        raise ValueError(f"configuration names must be unique; repeated: {repeated}")
    return out


def variants(spec: InjectionSpec | None) -> tuple[Variant, ...]:
    """The jobs each configuration runs."""
    if spec is None:
        return ("clean",)
    if spec.defences_off:
        return VARIANTS
    return ("clean", "injected")


def defended(variant: Variant) -> bool:
    return not variant.endswith("-undefended")


def injected(variant: Variant) -> bool:
    return variant.startswith("injected")


Pair = tuple[str, str]


def variant_rows(
    pairs: Iterable[tuple[Pair, str]], attacks: Sequence[injection.Attack]
) -> Iterator[Pair]:
    """The injected pairs, gold item by gold item, then attack by attack: position
    ``p`` is gold item ``p // len(attacks)`` with attack ``attacks[p % len(attacks)]``.
    Each of ``pairs`` is ``((response_a, response_b), answer)``."""
    for (a, b), answer in pairs:
        for attack in attacks:
            yield injection.variant_pair(a, b, answer, attack)


def variant_of(position: int, attacks: Sequence[injection.Attack]) -> tuple[int, injection.Attack]:
    """(gold position, attack) of an injected row."""
    gold, which = divmod(position, len(attacks))
    return gold, attacks[which]
