"""How often humans agree with the AI labels, and with each other. Pure: no I/O.

- Agreement rate: the share of human verdicts that match the AI label (each
  reviewer's verdict on a label is one observation), with a Wilson score 95%
  interval; overall, per principle, per model.
- Cohen's kappa between humans: for every pair of reviewers, kappa over the labels
  both reviewed; the mean over the pairs (a pair whose kappa is undefined, both
  giving one and the same answer throughout, is left out and counted apart), and
  how many labels were reviewed by two or more humans.
- Calibration: the agreement rate per AI-confidence bin (comparisons: the soft
  label of the chosen side, max(P(A), 1 - P(A)), in bins of 0.1 from 0.5).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations, pairwise

from charter.core.judge_stats import wilson

CALIBRATION_EDGES = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class Judgement:
    """One human verdict on one AI label."""

    label_id: int
    reviewer: str
    answer: str
    """The human's answer as a category (``A``/``B``/``tie``, ``yes``/``no``), for kappa."""
    agrees: bool
    principle: str
    model: str
    confidence: float | None = None
    """The AI's confidence in its label (comparisons), None when it has none."""


@dataclass(frozen=True)
class Rate:
    agreed: int
    n: int
    rate: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Kappa:
    mean: float | None
    """Mean pairwise Cohen's kappa; None without a pair that defines one."""
    pairs: int
    """Reviewer pairs the mean is over."""
    undefined_pairs: int
    """Pairs with shared labels whose kappa is undefined (chance agreement 1)."""
    items: int
    """Labels reviewed by two or more humans."""


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    rate: Rate


@dataclass(frozen=True)
class Report:
    overall: Rate
    by_principle: dict[str, Rate] = field(default_factory=dict)
    by_model: dict[str, Rate] = field(default_factory=dict)
    calibration: list[CalibrationBin] = field(default_factory=list)
    kappa: Kappa = field(default_factory=lambda: Kappa(None, 0, 0, 0))
    labels: int = 0
    reviewers: int = 0


def rate(agreed: int, n: int) -> Rate:
    """The share agreed, with its Wilson interval (:func:`judge_stats.wilson`)."""
    if n == 0:
        return Rate(0, 0, None, None, None)
    if not 0 <= agreed <= n:
        raise ValueError("need 0 <= agreed <= n")
    share = wilson(agreed, n)
    return Rate(agreed, n, share.value, share.low, share.high)


def _rate_of(judgements: Iterable[Judgement]) -> Rate:
    items = list(judgements)
    return rate(sum(j.agrees for j in items), len(items))


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters' answers on the same items; None when undefined
    (no items, or chance agreement 1: both gave one and the same answer throughout)."""
    if len(first) != len(second):
        raise ValueError("the two raters must answer the same items")
    n = len(first)
    if n == 0:
        return None
    observed = sum(a == b for a, b in zip(first, second, strict=True)) / n
    counts_a: dict[Hashable, int] = defaultdict(int)
    counts_b: dict[Hashable, int] = defaultdict(int)
    for a, b in zip(first, second, strict=True):
        counts_a[a] += 1
        counts_b[b] += 1
    expected = sum(counts_a[c] * counts_b.get(c, 0) for c in counts_a) / (n * n)
    if math.isclose(expected, 1.0):
        return None
    return (observed - expected) / (1 - expected)


def pairwise_kappa(judgements: Iterable[Judgement]) -> Kappa:
    answers: dict[str, dict[int, str]] = defaultdict(dict)
    for j in judgements:
        answers[j.reviewer][j.label_id] = j.answer
    reviewers_of: dict[int, int] = defaultdict(int)
    for by_label in answers.values():
        for label_id in by_label:
            reviewers_of[label_id] += 1
    values: list[float] = []
    undefined = 0
    for a, b in combinations(sorted(answers), 2):
        shared = sorted(set(answers[a]) & set(answers[b]))
        if not shared:
            continue
        kappa = cohen_kappa([answers[a][i] for i in shared], [answers[b][i] for i in shared])
        if kappa is None:
            undefined += 1
        else:
            values.append(kappa)
    mean = sum(values) / len(values) if values else None
    items = sum(1 for count in reviewers_of.values() if count >= 2)
    return Kappa(mean, len(values), undefined, items)


def calibration_bin(confidence: float) -> int:
    """The index of the bin [0.5, 0.6), ..., [0.9, 1.0] holding ``confidence``."""
    for i, high in enumerate(CALIBRATION_EDGES[1:]):
        if confidence < high:
            return i
    return len(CALIBRATION_EDGES) - 2


def calibration(judgements: Iterable[Judgement]) -> list[CalibrationBin]:
    """Agreement per AI-confidence bin (every bin, empty ones with n = 0)."""
    bins: list[list[Judgement]] = [[] for _ in CALIBRATION_EDGES[1:]]
    for j in judgements:
        if j.confidence is not None:
            bins[calibration_bin(j.confidence)].append(j)
    return [
        CalibrationBin(low, high, _rate_of(items))
        for (low, high), items in zip(pairwise(CALIBRATION_EDGES), bins, strict=True)
    ]


def _grouped(judgements: Sequence[Judgement], key: str) -> dict[str, Rate]:
    groups: dict[str, list[Judgement]] = defaultdict(list)
    for j in judgements:
        groups[getattr(j, key)].append(j)
    return {name: _rate_of(groups[name]) for name in sorted(groups)}


def report(judgements: Iterable[Judgement]) -> Report:
    items = list(judgements)
    has_confidence = any(j.confidence is not None for j in items)
    return Report(
        overall=_rate_of(items),
        by_principle=_grouped(items, "principle"),
        by_model=_grouped(items, "model"),
        calibration=calibration(items) if has_confidence else [],
        kappa=pairwise_kappa(items),
        labels=len({j.label_id for j in items}),
        reviewers=len({j.reviewer for j in items}),
    )


# --------------------------------------------------------------------------- one verdict


def ai_choice(p_a: float) -> str:
    """The side the AI label prefers (``A`` at 0.5, as the datasets choose it)."""
    return "A" if p_a >= 0.5 else "B"


def ai_confidence(p_a: float) -> float:
    """The soft label of the chosen side, max(P(A), 1 - P(A))."""
    return max(p_a, 1.0 - p_a)


def agrees(*, p_a: float | None, choice: str | None, satisfies: bool | None) -> bool:
    """Whether a verdict matches the AI label: a comparison's choice is the AI's side
    (a ``tie`` never matches a label that picked one), a revision's verdict that it
    satisfies the principle matches the AI, which offered it as the revision that does."""
    if choice is not None:
        return p_a is not None and choice == ai_choice(p_a)
    return bool(satisfies)


def answer(*, choice: str | None, satisfies: bool | None) -> str:
    """A verdict as a kappa category."""
    if choice is not None:
        return choice
    return "yes" if satisfies else "no"
