"""What a policy evaluation asks of the workers, and how its labels become Elo scores. Pure.

The paper rates policies by Elo from pairwise comparisons, harmlessness and helpfulness
separately (Bai et al. 2022, Fig. 2/3). An evaluation here is two stages of ordinary
jobs on one prompt batch:

1. **generate**: one ``generate`` job per policy (a model or ``run:<id>``, its system
   prompt and sampling), so each policy answers every prompt once;
2. **compare**: once every generation job has finished, one *pairs batch* holds, for
   each prompt and each unordered pair of policies that both answered it, one row with
   the two answers; each judge (a :class:`~charter.core.eval_plans.JudgeConfig` under
   its own constitution) scores that batch as one ``compare`` job.

Row ``p`` of the pairs batch is ``slots[p]``: (prompt position, policy shown as A,
policy shown as B). Which policy is shown first alternates with the prompt and the pair
(:func:`slots`), so a judge without swap spreads its position bias evenly. Each label's
``p_a`` then becomes one :class:`~charter.core.elo.Comparison` grouped by prompt, and
:func:`charter.core.elo.ratings` fits the scores with bootstrap intervals over prompts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from charter.core import elo
from charter.core.engine import SamplingParams
from charter.core.eval_plans import CONFIG_NAME, JudgeConfig
from charter.core.jobs import MODEL_PATTERN, JobParams

MAX_POLICIES = 8
MAX_JUDGES = 4
MAX_PAIR_ROWS = 100_000
"""Rows of a pairs batch: prompts x pairs of policies (8 policies are 28 pairs)."""
MAX_FIT_WORK = 10_000_000
"""Comparisons x bootstrap samples a report may fit per judge (about 5 s on a 2-core
CPU): every read of a report fits its scores again."""


class PolicySpec(BaseModel):
    """One policy: what answers the prompts."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=CONFIG_NAME.pattern, description="How the report names it.")
    model: str = Field(
        min_length=1,
        max_length=128,
        pattern=MODEL_PATTERN,
        description="A model some worker serves, or run:<id> (a completed policy run).",
    )
    system_prompt: Literal["default", "constitution"] = Field(
        default="default",
        description="'constitution': the model is told its constitution (the paper's "
        "missing baseline: the base model, prompted with the constitution).",
    )
    constitution: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        description="The constitution its generate job names (and tells it, with "
        "system_prompt 'constitution'); the first judge's if omitted.",
    )
    sampling: SamplingParams = Field(default_factory=SamplingParams)

    def job_params(self) -> JobParams:
        return JobParams(system_prompt=self.system_prompt, sampling=self.sampling)


class JudgeSpec(JudgeConfig):
    """A judge configuration with a required name: the axis it scores (e.g.
    'harmlessness' under the default constitution, 'helpfulness' under helpful-balance)."""

    name: str = Field(pattern=CONFIG_NAME.pattern, description="The axis the judge scores.")


def repeated(names: Iterable[str]) -> list[str]:
    return sorted(name for name, count in Counter(names).items() if count > 1)


def plot_axes(judges: Sequence[str], asked: Sequence[str] | None) -> tuple[str, str] | None:
    """The judges on the plot's x and y axes: as asked, else helpfulness against
    harmlessness when both are judged (the paper's figure), else the first two."""
    if asked is not None:
        x, y = asked
        return x, y
    if "helpfulness" in judges and "harmlessness" in judges:
        return "helpfulness", "harmlessness"
    if len(judges) >= 2:
        return judges[0], judges[1]
    return None


@dataclass(frozen=True)
class Slot:
    """One row of the pairs batch: ``prompt``'s answers by policies ``a`` and ``b``."""

    prompt: int
    a: int
    b: int


def slots(answered: Mapping[int, set[int]], policy_count: int) -> list[Slot]:
    """The pairs batch's rows, prompt by prompt, then pair by pair (``i < j``).

    ``answered``: prompt position -> the policies (indices) that answered it. A pair is
    compared on a prompt only when both answered; the policy shown first is ``i`` on
    even ``prompt + pair number`` and ``j`` on odd."""
    pairs = list(combinations(range(policy_count), 2))
    out = []
    for prompt in sorted(answered):
        have = answered[prompt]
        for number, (i, j) in enumerate(pairs):
            if i in have and j in have:
                first, second = (i, j) if (prompt + number) % 2 == 0 else (j, i)
                out.append(Slot(prompt, first, second))
    return out


def comparisons(
    slot_rows: Sequence[Slot], policies: Sequence[str], p_a: Mapping[int, float]
) -> list[elo.Comparison]:
    """One comparison per scored row (``p_a``: pairs-batch position -> the label's
    P(A)), grouped by prompt so intervals resample prompts."""
    return [
        elo.Comparison(
            policies[slot_rows[p].a], policies[slot_rows[p].b], value, str(slot_rows[p].prompt)
        )
        for p, value in sorted(p_a.items())
    ]


@dataclass(frozen=True)
class HeadToHead:
    """How often ``a`` was preferred to ``b`` (the mean of its soft outcomes)."""

    a: str
    b: str
    comparisons: int
    a_preferred: float | None


def head_to_head(found: Sequence[elo.Comparison], policies: Sequence[str]) -> list[HeadToHead]:
    """Every pair of policies (in their order), with what the judge said of it."""
    out = []
    for a, b in combinations(policies, 2):
        values = [c.p_a if c.a == a else 1 - c.p_a for c in found if {c.a, c.b} == {a, b}]
        mean = sum(values) / len(values) if values else None
        out.append(HeadToHead(a, b, len(values), mean))
    return out
