"""Statistics of a judge's A/B labels and of a job's progress. Pure: plain values in.

What an operator checks before trusting a judge's labels (docs/STATISTICS.md defines
each one exactly):

- position bias: the mean probability the judge gives the response shown *first*,
  averaged over the orders it scored. An unbiased judge sits at 0.5; SmolLM2 on
  public HHH pairs sits far below it (it prefers the second response).
- length bias: how often the longer response wins, and the correlation of the label
  with the length difference.
- swap disagreement: how often the two orders picked different winners.
- the distribution of the soft labels.

Intervals are 95%: Wilson for proportions, normal (z = 1.96 with the sample standard
deviation) for means. Every function takes empty input and answers n = 0 with no
value and no interval.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

Z95 = 1.959963984540054
"""The standard normal's 97.5% quantile: two-sided 95% intervals."""


@dataclass(frozen=True)
class PairLabel:
    """The columns of one usable A/B label that the statistics read."""

    p_a: float
    """Final P(A preferred)."""
    p_a_forward: float | None = None
    """P(A) with A shown first."""
    p_a_swapped: float | None = None
    """P(A) with A shown second; None when the job did not swap."""
    swap_disagreement: bool | None = None
    len_a: int | None = None
    """Characters of response A."""
    len_b: int | None = None
    principle_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Estimate:
    """A value with its 95% interval over ``n`` observations (None when undefined)."""

    value: float | None
    low: float | None
    high: float | None
    n: int


@dataclass(frozen=True)
class LengthBias:
    longer_wins: Estimate
    """Share of decided pairs whose longer response won, with its Wilson interval."""
    length_ties: int
    """Pairs left out because both responses have the same length (or no length)."""
    label_ties: int
    """Pairs left out because the label is exactly 0.5 (no winner)."""
    correlation: float | None
    """Pearson r of (p_a - 0.5) with (len_a - len_b); None when undefined."""
    correlation_n: int
    """Pairs the correlation is computed over (every pair with both lengths)."""


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    count: int


@dataclass(frozen=True)
class JudgeSummary:
    n: int
    """Labels summarised."""
    mean_p_a: float | None
    position_bias: Estimate
    length_bias: LengthBias
    swap_disagreement: Estimate
    histogram: list[Bin]


NO_ESTIMATE = Estimate(None, None, None, 0)


def _clamp01(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def mean_interval(values: Sequence[float], *, bounds: tuple[float, float] = (0.0, 1.0)) -> Estimate:
    """The mean with a normal 95% interval (mean +- 1.96 s / sqrt(n)), clipped to ``bounds``.

    n = 1 gives the value and no interval; n = 0 gives nothing."""
    n = len(values)
    if n == 0:
        return NO_ESTIMATE
    mean = math.fsum(values) / n
    if n < 2:
        return Estimate(mean, None, None, n)
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    half = Z95 * math.sqrt(variance / n)
    low, high = bounds
    return Estimate(mean, max(mean - half, low), min(mean + half, high), n)


def wilson(successes: int, n: int) -> Estimate:
    """The share ``successes / n`` with its 95% Wilson score interval."""
    if n <= 0:
        return NO_ESTIMATE
    p = successes / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At 0 or n successes the bound is exactly 0 or 1; floating point leaves ~1e-17.
    low = 0.0 if successes == 0 else _clamp01(centre - half)
    high = 1.0 if successes == n else _clamp01(centre + half)
    return Estimate(p, low, high, n)


def p_first(label: PairLabel) -> float | None:
    """P(the response shown first wins), averaged over the orders scored.

    Forward shows A first: P(first) = p_a_forward. Swapped shows B first, and
    p_a_swapped is P(A) there, so P(first) = 1 - p_a_swapped."""
    orders = []
    if label.p_a_forward is not None:
        orders.append(label.p_a_forward)
    if label.p_a_swapped is not None:
        orders.append(1.0 - label.p_a_swapped)
    return math.fsum(orders) / len(orders) if orders else None


def position_bias(labels: Iterable[PairLabel]) -> Estimate:
    """Mean P(first position) over pairs, with a normal 95% interval; 0.5 is unbiased."""
    return mean_interval([p for p in map(p_first, labels) if p is not None])


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r; None with fewer than two points or when either side is constant."""
    n = len(xs)
    if n < 2 or n != len(ys):
        return None
    mx, my = math.fsum(xs) / n, math.fsum(ys) / n
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def length_bias(labels: Iterable[PairLabel]) -> LengthBias:
    """How often the longer response wins (A wins when p_a > 0.5), and Pearson r of
    (p_a - 0.5) with (len_a - len_b)."""
    wins = decided = length_ties = label_ties = 0
    diffs: list[float] = []
    margins: list[float] = []
    for label in labels:
        if label.len_a is None or label.len_b is None:
            length_ties += 1
            continue
        diff = label.len_a - label.len_b
        diffs.append(float(diff))
        margins.append(label.p_a - 0.5)
        if diff == 0:
            length_ties += 1
        elif label.p_a == 0.5:
            label_ties += 1
        else:
            decided += 1
            wins += (label.p_a > 0.5) == (diff > 0)
    return LengthBias(
        longer_wins=wilson(wins, decided),
        length_ties=length_ties,
        label_ties=label_ties,
        correlation=pearson(margins, diffs),
        correlation_n=len(diffs),
    )


def swap_disagreement_rate(labels: Iterable[PairLabel]) -> Estimate:
    """Share of swapped pairs whose two orders picked different winners (Wilson)."""
    flags = [label.swap_disagreement for label in labels if label.swap_disagreement is not None]
    return wilson(sum(flags), len(flags))


def soft_label_histogram(
    values: Iterable[float], bins: int = 10, range: tuple[float, float] = (0.0, 1.0)
) -> list[Bin]:
    """Counts in ``bins`` equal bins over ``range``: each bin is [low, high), the last
    also holds its right edge; values outside the range are not counted."""
    if bins < 1:
        raise ValueError("bins must be at least 1")
    lo, hi = range
    if not hi > lo:
        raise ValueError("range must have high > low")
    counts = [0] * bins
    width = (hi - lo) / bins
    for v in values:
        if not lo <= v <= hi:
            continue
        counts[min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
    return [
        Bin(lo + i * width, hi if i == bins - 1 else lo + (i + 1) * width, c)
        for i, c in enumerate(counts)
    ]


def judge_summary(labels: Sequence[PairLabel], *, bins: int = 10) -> JudgeSummary:
    """Every statistic above over the same labels."""
    n = len(labels)
    return JudgeSummary(
        n=n,
        mean_p_a=math.fsum(label.p_a for label in labels) / n if n else None,
        position_bias=position_bias(labels),
        length_bias=length_bias(labels),
        swap_disagreement=swap_disagreement_rate(labels),
        histogram=soft_label_histogram((label.p_a for label in labels), bins),
    )


def by_principle(labels: Iterable[PairLabel], *, bins: int = 10) -> dict[str, JudgeSummary]:
    """A summary per principle id; a label drawn with several counts under each."""
    groups: dict[str, list[PairLabel]] = defaultdict(list)
    for label in labels:
        for principle in dict.fromkeys(label.principle_ids):
            groups[principle].append(label)
    return {p: judge_summary(group, bins=bins) for p, group in sorted(groups.items())}


def principle_draws(label_rounds: Iterable[Sequence[str]]) -> dict[str, int]:
    """How often each principle was drawn: each item is one label's principle ids, one
    per critique round (a principle drawn in two rounds counts twice)."""
    counts: Counter[str] = Counter()
    for rounds in label_rounds:
        counts.update(rounds)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


RECENT = timedelta(minutes=15)
"""The stretch of the timeline that throughput is measured over."""


def throughput_and_eta(
    points: Sequence[tuple[datetime, int]], remaining: int, *, window: timedelta = RECENT
) -> tuple[float | None, float | None]:
    """(items per minute, seconds to finish) from a cumulative labelled-count timeline.

    The rate is the count gained between the last point and the earliest point
    within ``window`` before it, over the time between them. None with fewer than
    two such points; the ETA is 0 when nothing remains and None when the rate is 0."""
    if remaining <= 0:
        eta: float | None = 0.0
    else:
        eta = None
    ordered = sorted(points)
    if len(ordered) < 2:
        return None, eta
    end, last = ordered[-1]
    start, first = next((t, c) for t, c in ordered if t >= end - window)
    minutes = (end - start).total_seconds() / 60.0
    if minutes <= 0:
        return None, eta
    rate = max(last - first, 0) / minutes
    if remaining > 0 and rate > 0:
        eta = remaining / rate * 60.0
    return rate, eta
