"""How good a judge is on a gold set: items whose correct answer is known. Pure.

A gold evaluation runs one or more judge configurations on the same gold items (as
ordinary ``compare`` jobs); each scored item becomes one :class:`GoldVerdict`. Items
not yet labelled are not passed in. The definitions, exactly:

- **answered**: an item that is not ``abstained`` and has a final ``p_a``.
- **correct** for a probability ``p`` of "response a is better":
  ``(p > 0.5 and answer == "a") or (p < 0.5 and answer == "b")``. ``p == 0.5`` is a
  tie and counts as not correct.
- **gold probability** ``g`` of an item: ``p_gold`` for soft gold, otherwise 1.0 when
  the answer is "a" and 0.0 when it is "b".
- **accuracy**, **accuracy_forward**, **accuracy_swapped**: the share of correct
  items with its 95% Wilson interval, judged on ``p_a``, ``p_a_forward`` and
  ``p_a_swapped`` respectively, over the answered items that have that value.
  ``p_a_swapped`` is already P(original A preferred), so the same rule applies.
- **order_inconsistency**: over the answered items with both ``p_a_forward`` and
  ``p_a_swapped``, the Wilson share whose two orders pick different winners,
  ``(p_a_forward - 0.5) * (p_a_swapped - 0.5) < 0`` (a 0.5 in one order is no
  disagreement).
- **position_bias**: ``judge_stats.position_bias`` over the answered items: the mean
  P(response shown first wins), where an item's P(first) is the mean of
  ``p_a_forward`` and ``1 - p_a_swapped`` over the orders it has; normal 95% interval;
  0.5 is unbiased.
- **length_bias**: ``judge_stats.length_bias`` over the answered items (``p_a``,
  ``len_a``, ``len_b``): how often the longer response wins, and Pearson r of
  ``p_a - 0.5`` with ``len_a - len_b``.
- **abstention**: the Wilson share of ``abstained`` items among all ``n`` items.
- **calibration**: a reliability table of the answered items' ``p_a`` against ``g``
  (the 0/1 outcome "a is correct" for hard gold, ``p_gold`` for soft gold) in 10 equal
  bins over [0, 1]: bin i is [i/10, (i+1)/10), the last also holds 1.0. Each bin has
  its ``count``, ``mean_predicted`` (mean ``p_a``) and ``mean_observed`` (mean ``g``),
  both None when the bin is empty.
- **ece** (expected calibration error): ``sum over bins of count / N *
  |mean_predicted - mean_observed|`` with N the answered items; None when N = 0.
- **log_loss**: the mean over the answered items of ``-(g ln p + (1 - g) ln(1 - p))``
  with ``p = p_a`` clipped to [1e-6, 1 - 1e-6], with a normal 95% interval
  (``judge_stats.mean_interval``, mean +- 1.96 s / sqrt(n), clipped at 0).
- **by_category** / **by_principle**: the same metrics over the items of each
  category / each distinct principle id (an item with several counts under each;
  items without one are in no group). A group's own groups are empty.

Paired comparison of two configurations (:func:`paired_difference`): items are
matched by ``position``; over the positions answered by both,
``d_i = correct_first - correct_second`` (1, 0 or -1), the difference in accuracy is
``mean(d)`` with ``judge_stats.mean_interval(d, bounds=(-1, 1))``, and McNemar's exact
two-sided test on the discordant pairs (b first only right, c second only right,
m = b + c) gives ``p = min(1, 2 * sum_{k <= min(b, c)} C(m, k) / 2^m)``, 1.0 when
m = 0.

Every function takes empty input: n = 0, no values, no intervals.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from charter.core.judge_stats import (
    Estimate,
    LengthBias,
    PairLabel,
    length_bias,
    mean_interval,
    position_bias,
    wilson,
)

CALIBRATION_BINS = 10
LOG_LOSS_EPS = 1e-6
"""Predictions are clipped to [eps, 1 - eps] so a confident miss costs a finite loss."""


def check_gold(answer: str, p_gold: float | None) -> None:
    """Reject a gold item whose soft label contradicts (or cannot encode) its answer."""
    if answer not in ("a", "b"):
        raise ValueError(f"gold answer must be 'a' or 'b', not {answer!r}")
    if p_gold is None:
        return
    if not 0.0 <= p_gold <= 1.0:
        raise ValueError(f"p_gold must lie in [0, 1], got {p_gold!r}")
    if answer == "a" and not p_gold > 0.5:
        raise ValueError(f"p_gold {p_gold!r} must be above 0.5 when the answer is 'a'")
    if answer == "b" and not p_gold < 0.5:
        raise ValueError(f"p_gold {p_gold!r} must be below 0.5 when the answer is 'b'")


@dataclass(frozen=True)
class GoldVerdict:
    """One gold item as one judge configuration scored it."""

    position: int
    """The gold item's row number; pairs configurations for paired comparisons."""
    answer: Literal["a", "b"]
    """Which response is correct."""
    p_gold: float | None
    """Soft gold: P(response a is better); None for hard gold."""
    category: str | None
    p_a: float | None
    """Final label; None when abstained."""
    p_a_forward: float | None
    p_a_swapped: float | None
    """P(original A preferred) from the swapped order; None when the job did not swap."""
    abstained: bool
    """The item has no usable label because the judge abstained."""
    principle_ids: tuple[str, ...] = ()
    len_a: int | None = None
    len_b: int | None = None

    def __post_init__(self) -> None:
        check_gold(self.answer, self.p_gold)
        for name in ("p_a", "p_a_forward", "p_a_swapped"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value!r}")

    @property
    def answered(self) -> bool:
        return not self.abstained and self.p_a is not None

    @property
    def gold_probability(self) -> float:
        """P(a is better) by the gold: p_gold, or 1/0 for a hard answer a/b."""
        if self.p_gold is not None:
            return self.p_gold
        return 1.0 if self.answer == "a" else 0.0


def is_correct(p: float, answer: str) -> bool:
    """Whether ``p`` = P(a is better) picks the gold answer; 0.5 picks nothing."""
    return (p > 0.5 and answer == "a") or (p < 0.5 and answer == "b")


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    count: int
    mean_predicted: float | None
    mean_observed: float | None


def reliability_table(
    pairs: Iterable[tuple[float, float]],
    *,
    bins: int = CALIBRATION_BINS,
    span: tuple[float, float] = (0.0, 1.0),
) -> list[ReliabilityBin]:
    """Mean prediction and mean observation per equal-width bin of the prediction.

    Each pair is (predicted, observed). Bin i is [edge_i, edge_(i+1)) with
    edge_i = low + (high - low) * i / bins; the last bin also holds ``high``. A
    prediction outside ``span`` is an error rather than silently dropped, so the
    counts always add up to the pairs given."""
    if bins < 1:
        raise ValueError("bins must be at least 1")
    lo, hi = span
    if not hi > lo:
        raise ValueError("span must have high > low")
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    edges[-1] = hi
    predicted: list[list[float]] = [[] for _ in range(bins)]
    observed: list[list[float]] = [[] for _ in range(bins)]
    for p, o in pairs:
        if not lo <= p <= hi:
            raise ValueError(f"prediction {p!r} outside [{lo}, {hi}]")
        i = bisect_right(edges, p, 1, bins) - 1  # interior edges only: high lands in the last
        predicted[i].append(p)
        observed[i].append(o)
    return [
        ReliabilityBin(
            low=edges[i],
            high=edges[i + 1],
            count=len(predicted[i]),
            mean_predicted=_mean(predicted[i]),
            mean_observed=_mean(observed[i]),
        )
        for i in range(bins)
    ]


def expected_calibration_error(table: Sequence[ReliabilityBin]) -> float | None:
    """sum count / N * |mean_predicted - mean_observed|; None when the table is empty."""
    total = sum(b.count for b in table)
    if total == 0:
        return None
    return math.fsum(
        b.count / total * abs(b.mean_predicted - b.mean_observed)
        for b in table
        if b.mean_predicted is not None and b.mean_observed is not None
    )


def log_loss_terms(verdicts: Iterable[GoldVerdict]) -> list[float]:
    """Each answered item's -(g ln p + (1 - g) ln(1 - p)), p clipped away from 0 and 1."""
    terms = []
    for v in verdicts:
        if not v.answered or v.p_a is None:
            continue
        p = min(max(v.p_a, LOG_LOSS_EPS), 1.0 - LOG_LOSS_EPS)
        g = v.gold_probability
        terms.append(-(g * math.log(p) + (1.0 - g) * math.log(1.0 - p)))
    return terms


@dataclass(frozen=True)
class JudgeMetrics:
    """Every gold-set statistic of one judge configuration (definitions: module doc)."""

    n: int
    """Items passed."""
    answered: int
    accuracy: Estimate
    accuracy_forward: Estimate
    accuracy_swapped: Estimate
    order_inconsistency: Estimate
    position_bias: Estimate
    length_bias: LengthBias
    abstention: Estimate
    calibration: list[ReliabilityBin]
    ece: float | None
    log_loss: Estimate
    by_category: dict[str, JudgeMetrics] = field(default_factory=dict)
    by_principle: dict[str, JudgeMetrics] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts, lists, numbers and None: ready for JSON (no NaN or infinity)."""
        return asdict(self)


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _accuracy(
    answered: Sequence[GoldVerdict], read: Callable[[GoldVerdict], float | None]
) -> Estimate:
    outcomes = [is_correct(p, v.answer) for v in answered if (p := read(v)) is not None]
    return wilson(sum(outcomes), len(outcomes))


def _pair_label(v: GoldVerdict) -> PairLabel:
    assert v.p_a is not None
    return PairLabel(
        p_a=v.p_a,
        p_a_forward=v.p_a_forward,
        p_a_swapped=v.p_a_swapped,
        len_a=v.len_a,
        len_b=v.len_b,
        principle_ids=v.principle_ids,
    )


def _metrics(items: Sequence[GoldVerdict], *, grouped: bool) -> JudgeMetrics:
    answered = [v for v in items if v.answered]
    both_orders = [
        (v.p_a_forward, v.p_a_swapped)
        for v in answered
        if v.p_a_forward is not None and v.p_a_swapped is not None
    ]
    labels = [_pair_label(v) for v in answered]
    calibration = reliability_table(
        (v.p_a, v.gold_probability) for v in answered if v.p_a is not None
    )
    by_category: dict[str, JudgeMetrics] = {}
    by_principle: dict[str, JudgeMetrics] = {}
    if grouped:
        categories: dict[str, list[GoldVerdict]] = defaultdict(list)
        principles: dict[str, list[GoldVerdict]] = defaultdict(list)
        for v in items:
            if v.category is not None:
                categories[v.category].append(v)
            for principle in dict.fromkeys(v.principle_ids):
                principles[principle].append(v)
        by_category = {k: _metrics(g, grouped=False) for k, g in sorted(categories.items())}
        by_principle = {k: _metrics(g, grouped=False) for k, g in sorted(principles.items())}
    return JudgeMetrics(
        n=len(items),
        answered=len(answered),
        accuracy=_accuracy(answered, lambda v: v.p_a),
        accuracy_forward=_accuracy(answered, lambda v: v.p_a_forward),
        accuracy_swapped=_accuracy(answered, lambda v: v.p_a_swapped),
        order_inconsistency=wilson(
            sum((f - 0.5) * (s - 0.5) < 0 for f, s in both_orders), len(both_orders)
        ),
        position_bias=position_bias(labels),
        length_bias=length_bias(labels),
        abstention=wilson(sum(v.abstained for v in items), len(items)),
        calibration=calibration,
        ece=expected_calibration_error(calibration),
        log_loss=mean_interval(log_loss_terms(answered), bounds=(0.0, math.inf)),
        by_category=by_category,
        by_principle=by_principle,
    )


def evaluate(verdicts: Iterable[GoldVerdict]) -> JudgeMetrics:
    """One configuration's metrics on the gold items it has labelled, overall and grouped."""
    return _metrics(list(verdicts), grouped=True)


# --------------------------------------------------------------------------- two judges


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of ``first`` minus accuracy of ``second`` on the same gold items."""

    value: float | None
    """mean(d) over the positions both answered: the difference in accuracy."""
    low: float | None
    high: float | None
    n: int
    """Positions present in both configurations."""
    both_answered: int
    """Positions answered by both: what ``value`` is computed over."""
    first_only: int
    """Positions where first is correct and second is not."""
    second_only: int
    mcnemar_p: float
    """McNemar's exact two-sided p-value on first_only vs second_only."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: the binomial(b + c, 1/2) tail at min(b, c), doubled."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    m = b + c
    if m == 0:
        return 1.0
    tail = sum(math.comb(m, k) for k in range(min(b, c) + 1))
    return min(1.0, 2 * tail / (1 << m))


def _by_position(verdicts: Iterable[GoldVerdict], side: str) -> dict[int, GoldVerdict]:
    table: dict[int, GoldVerdict] = {}
    for v in verdicts:
        if v.position in table:
            raise ValueError(f"{side}: gold position {v.position} appears twice")
        table[v.position] = v
    return table


def paired_difference(
    first: Iterable[GoldVerdict], second: Iterable[GoldVerdict]
) -> PairedDifference:
    """Compare two configurations item by item (definitions: module doc).

    Pairing removes the between-item variance that two independent accuracies would
    carry, so a small real difference shows up on the same gold set."""
    a, b = _by_position(first, "first"), _by_position(second, "second")
    shared = sorted(a.keys() & b.keys())
    d: list[float] = []
    first_only = second_only = 0
    for position in shared:
        x, y = a[position], b[position]
        if x.answer != y.answer:
            raise ValueError(f"gold position {position} has different answers in the two sets")
        if not (x.answered and y.answered) or x.p_a is None or y.p_a is None:
            continue
        diff = int(is_correct(x.p_a, x.answer)) - int(is_correct(y.p_a, y.answer))
        first_only += diff == 1
        second_only += diff == -1
        d.append(float(diff))
    estimate = mean_interval(d, bounds=(-1.0, 1.0))
    return PairedDifference(
        value=estimate.value,
        low=estimate.low,
        high=estimate.high,
        n=len(shared),
        both_answered=len(d),
        first_only=first_only,
        second_only=second_only,
        mcnemar_p=mcnemar_exact(first_only, second_only),
    )
