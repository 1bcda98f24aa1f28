"""Judge statistics against values computed by hand (docs/STATISTICS.md)."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from charter.core.judge_stats import (
    Bin,
    Estimate,
    PairLabel,
    by_principle,
    judge_summary,
    length_bias,
    mean_interval,
    p_first,
    pearson,
    position_bias,
    principle_draws,
    soft_label_histogram,
    swap_disagreement_rate,
    throughput_and_eta,
    wilson,
)

approx = pytest.approx


def _swapped(forward: float, swapped: float, **kw: object) -> PairLabel:
    """A swapped pair as ``labels.combine`` stores it: p_a the mean of both orders."""
    return PairLabel(
        p_a=(forward + swapped) / 2,
        p_a_forward=forward,
        p_a_swapped=swapped,
        swap_disagreement=(forward - 0.5) * (swapped - 0.5) < 0,
        **kw,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- position bias


def test_p_first_reads_each_order_the_right_way_round() -> None:
    # Forward shows A first: P(first) = P(A) = 0.8. Swapped shows B first and stores
    # P(A) = 0.3 there, so P(first) = P(B) = 0.7. Mean: 0.75.
    assert p_first(_swapped(0.8, 0.3)) == approx(0.75)
    assert p_first(PairLabel(p_a=0.8, p_a_forward=0.8)) == approx(0.8)  # no swap
    assert p_first(PairLabel(p_a=0.5)) is None


def test_always_prefers_second_is_position_bias_zero() -> None:
    # A first: P(A) = 0; A second: P(A) = 1. The pair's label is 0.5, its P(first) 0.
    labels = [_swapped(0.0, 1.0) for _ in range(20)]
    bias = position_bias(labels)
    assert bias == Estimate(0.0, 0.0, 0.0, 20)
    soft = [_swapped(0.1, 0.85) for _ in range(5)] + [_swapped(0.2, 0.95) for _ in range(5)]
    # P(first): (0.1 + 0.15) / 2 = 0.125 and (0.2 + 0.05) / 2 = 0.125.
    assert position_bias(soft).value == approx(0.125)
    assert position_bias(soft).high == approx(0.125)


def test_unbiased_judge_is_one_half_within_its_interval() -> None:
    # Prefers the better response whichever order it is shown in: P(first) is 0.5 on
    # average. Pairs where A is better (0.8 forward, 0.8 swapped) and where B is.
    labels = [_swapped(0.8, 0.8), _swapped(0.2, 0.2), _swapped(0.7, 0.9), _swapped(0.3, 0.1)]
    bias = position_bias(labels)
    assert bias.value == approx(0.5)
    assert bias.low is not None and bias.high is not None
    assert bias.low < 0.5 < bias.high
    assert bias.n == 4


def test_mean_interval_by_hand() -> None:
    # mean 0.3, s = sqrt((0.01 + 0.01) / 1) = 0.1414, half = 1.96 * s / sqrt(2) = 0.196
    est = mean_interval([0.2, 0.4])
    assert est.value == approx(0.3)
    assert est.low == approx(0.3 - 1.959963984540054 * 0.1)
    assert est.high == approx(0.3 + 1.959963984540054 * 0.1)
    assert mean_interval([0.4]) == Estimate(0.4, None, None, 1)
    assert mean_interval([]) == Estimate(None, None, None, 0)
    assert mean_interval([0.0, 0.01]).low == 0.0  # clipped to [0, 1]


# --------------------------------------------------------------------------- proportions


def test_wilson_by_hand() -> None:
    # 8 of 10: the textbook 95% Wilson interval is (0.490, 0.943).
    est = wilson(8, 10)
    assert est.value == approx(0.8)
    assert est.low == approx(0.4902, abs=1e-4)
    assert est.high == approx(0.9433, abs=1e-4)
    zero = wilson(0, 10)
    assert zero.value == 0.0 and zero.low == 0.0 and zero.high == approx(0.2775, abs=1e-4)
    assert wilson(0, 0) == Estimate(None, None, None, 0)


def test_swap_disagreement_rate() -> None:
    labels = [
        _swapped(0.8, 0.3),  # forward picks A, swapped picks B: disagree
        _swapped(0.8, 0.7),
        _swapped(0.2, 0.1),
        PairLabel(p_a=0.9, p_a_forward=0.9),  # not swapped: not counted
    ]
    est = swap_disagreement_rate(labels)
    assert (est.value, est.n) == (approx(1 / 3), 3)
    assert swap_disagreement_rate([]) == Estimate(None, None, None, 0)


# --------------------------------------------------------------------------- length bias


def test_length_loving_judge() -> None:
    # The label moves with the length difference: the longer always wins, r = 1.
    diffs = [-30, -10, 5, 20, 40]
    labels = [PairLabel(p_a=0.5 + d / 100, len_a=100 + d, len_b=100) for d in diffs]
    bias = length_bias(labels)
    assert bias.longer_wins.value == 1.0
    assert bias.longer_wins.n == 5
    assert bias.correlation == approx(1.0)
    assert (bias.length_ties, bias.label_ties, bias.correlation_n) == (0, 0, 5)


def test_length_bias_counts_and_exclusions() -> None:
    labels = [
        PairLabel(p_a=0.9, len_a=10, len_b=5),  # longer A wins
        PairLabel(p_a=0.9, len_a=5, len_b=10),  # shorter A wins
        PairLabel(p_a=0.2, len_a=5, len_b=10),  # longer B wins
        PairLabel(p_a=0.5, len_a=5, len_b=10),  # no winner: label tie
        PairLabel(p_a=0.9, len_a=7, len_b=7),  # length tie
        PairLabel(p_a=0.9),  # lengths unknown: counted as a length tie
    ]
    bias = length_bias(labels)
    assert bias.longer_wins.value == approx(2 / 3)
    assert bias.longer_wins.n == 3
    assert (bias.length_ties, bias.label_ties) == (2, 1)
    # Correlation over the five pairs with lengths: x = p_a - 0.5, y = len_a - len_b.
    xs, ys = [0.4, 0.4, -0.3, 0.0, 0.4], [5, -5, -5, -5, 0]
    mx, my = sum(xs) / 5, sum(ys) / 5
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx, syy = sum((x - mx) ** 2 for x in xs), sum((y - my) ** 2 for y in ys)
    assert bias.correlation == approx(sxy / math.sqrt(sxx * syy))
    assert bias.correlation_n == 5


def test_correlation_undefined() -> None:
    assert pearson([], []) is None
    assert pearson([1.0], [2.0]) is None
    assert pearson([1.0, 1.0], [2.0, 3.0]) is None  # constant side
    empty = length_bias([])
    assert empty.correlation is None and empty.longer_wins == Estimate(None, None, None, 0)


# --------------------------------------------------------------------------- histogram


def test_histogram_edges() -> None:
    bins = soft_label_histogram([0.0, 0.05, 0.1, 0.95, 1.0, 1.5, -0.1])
    assert [b.count for b in bins] == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2]  # 1.0 in the last bin
    assert bins[0] == Bin(0.0, 0.1, 2)
    assert bins[-1].high == 1.0
    assert [b.count for b in soft_label_histogram([], bins=4)] == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        soft_label_histogram([0.5], bins=0)


# --------------------------------------------------------------------------- summaries


def test_summary_and_by_principle() -> None:
    labels = [
        _swapped(0.0, 1.0, principle_ids=("harmless",)),
        _swapped(0.2, 0.8, principle_ids=("harmless",)),
        _swapped(0.9, 0.9, principle_ids=("honest",)),
    ]
    summary = judge_summary(labels)
    assert summary.n == 3
    assert summary.mean_p_a == approx((0.5 + 0.5 + 0.9) / 3)
    assert summary.position_bias.value == approx((0.0 + 0.2 + 0.5) / 3)
    assert sum(b.count for b in summary.histogram) == 3
    per = by_principle(labels)
    assert list(per) == ["harmless", "honest"]
    assert per["harmless"].position_bias.value == approx(0.1)
    assert per["honest"].n == 1 and per["honest"].position_bias.low is None
    empty = judge_summary([])
    assert empty.n == 0 and empty.mean_p_a is None and empty.position_bias.n == 0
    assert by_principle([]) == {}


def test_principle_draws() -> None:
    draws = principle_draws([["a", "b"], ["a"], ["c", "a"], []])
    assert draws == {"a": 3, "b": 1, "c": 1}
    assert list(draws) == ["a", "b", "c"]  # most drawn first
    assert principle_draws([]) == {}


# --------------------------------------------------------------------------- progress


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_throughput_and_eta() -> None:
    points = [(T0 + timedelta(minutes=m), 10 * m) for m in range(11)]
    assert throughput_and_eta(points, remaining=50) == (approx(10.0), approx(300.0))
    # Only the last 15 minutes count: an early burst does not inflate the rate.
    burst = [(T0, 0), (T0 + timedelta(minutes=1), 1000)] + [
        (T0 + timedelta(minutes=m), 1000 + 2 * (m - 1)) for m in range(2, 40)
    ]
    rate, eta = throughput_and_eta(burst, remaining=60)
    assert rate == approx(2.0) and eta == approx(1800.0)


def test_throughput_edges() -> None:
    assert throughput_and_eta([], remaining=5) == (None, None)
    assert throughput_and_eta([(T0, 3)], remaining=0) == (None, 0.0)
    stalled = [(T0, 5), (T0 + timedelta(minutes=5), 5)]
    assert throughput_and_eta(stalled, remaining=5) == (0.0, None)
    assert throughput_and_eta([(T0, 5), (T0, 7)], remaining=5) == (None, None)


# --------------------------------------------------------------------------- properties

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@given(st.lists(unit, min_size=2, max_size=200))
def test_interval_contains_the_mean(values: list[float]) -> None:
    est = mean_interval(values)
    assert est.low is not None and est.high is not None and est.value is not None
    assert est.low <= est.value <= est.high
    assert est.low >= 0.0 and est.high <= 1.0


@given(
    st.integers(min_value=1, max_value=1000).flatmap(
        lambda n: st.tuples(st.integers(0, n), st.just(n))
    )
)
def test_wilson_contains_the_share(case: tuple[int, int]) -> None:
    successes, n = case
    est = wilson(successes, n)
    assert est.low is not None and est.high is not None and est.value is not None
    assert est.low <= est.value + 1e-12 and est.value <= est.high + 1e-12
    assert est.low >= 0.0 and est.high <= 1.0


@given(st.lists(unit, max_size=300), st.integers(min_value=1, max_value=50))
def test_histogram_counts_sum_to_n(values: list[float], bins: int) -> None:
    histogram = soft_label_histogram(values, bins=bins)
    assert len(histogram) == bins
    assert sum(b.count for b in histogram) == len(values)
    assert all(a.high == approx(b.low) for a, b in itertools.pairwise(histogram))


def test_wilson_bounds_are_exact_at_none_and_all() -> None:
    from charter.core.judge_stats import wilson

    for n in (1, 3, 40, 48, 1000):
        assert wilson(0, n).low == 0.0 and wilson(n, n).high == 1.0
        assert 0.0 < wilson(0, n).high < 1.0 and 0.0 < wilson(n, n).low < 1.0
