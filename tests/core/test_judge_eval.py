"""Gold-set judge evaluation against values worked out by hand on small sets."""

from __future__ import annotations

import json
import math

import pytest

from charter.core.judge_eval import (
    GoldVerdict,
    JudgeMetrics,
    check_gold,
    evaluate,
    expected_calibration_error,
    is_correct,
    log_loss_terms,
    mcnemar_exact,
    paired_difference,
    reliability_table,
)
from charter.core.judge_stats import NO_ESTIMATE, Estimate

approx = pytest.approx
Z = 1.959963984540054


def _wilson(k: int, n: int) -> tuple[float, float, float]:
    """The textbook Wilson score interval, written out: (share, low, high)."""
    p = k / n
    denominator = 1 + Z * Z / n
    centre = (p + Z * Z / (2 * n)) / denominator
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / denominator
    return p, max(centre - half, 0.0), min(centre + half, 1.0)


def _assert_wilson(estimate: Estimate, k: int, n: int) -> None:
    p, low, high = _wilson(k, n)
    assert estimate.n == n
    assert estimate.value == approx(p)
    assert estimate.low == approx(low)
    assert estimate.high == approx(high)


def _normal(values: list[float]) -> tuple[float, float]:
    """Mean and half-width 1.96 s / sqrt(n) with the sample standard deviation."""
    n = len(values)
    mean = sum(values) / n
    s2 = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, Z * math.sqrt(s2 / n)


def gv(
    position: int,
    answer: str,
    p_a: float | None,
    forward: float | None = None,
    swapped: float | None = None,
    *,
    p_gold: float | None = None,
    category: str | None = None,
    abstained: bool = False,
    principles: tuple[str, ...] = (),
    lengths: tuple[int, int] | None = None,
) -> GoldVerdict:
    return GoldVerdict(
        position=position,
        answer=answer,  # type: ignore[arg-type]
        p_gold=p_gold,
        category=category,
        p_a=p_a,
        p_a_forward=forward,
        p_a_swapped=swapped,
        abstained=abstained,
        principle_ids=principles,
        len_a=None if lengths is None else lengths[0],
        len_b=None if lengths is None else lengths[1],
    )


# Eight hard-gold items. Per row: correct on (final, forward, swapped); orders disagree?
HARD = [
    # 1.0 > .5, a: right on all three; orders agree. P(first) = (1.0 + 0.0) / 2 = 0.5
    gv(0, "a", 1.0, 1.0, 1.0, category="harm", principles=("p1",), lengths=(100, 50)),
    # .65 right; forward .9 right; swapped .4 wrong; disagree. P(first) = (.9 + .6) / 2
    gv(1, "a", 0.65, 0.9, 0.4, category="harm", principles=("p1", "p2"), lengths=(50, 100)),
    # .4 < .5, b: right; forward .6 wrong; swapped .2 right; disagree. P(first) = .7
    gv(2, "b", 0.4, 0.6, 0.2, category="help", principles=("p2",), lengths=(80, 40)),
    # .6 wrong; forward .7 wrong; swapped .5 a tie (wrong, no disagreement). P(first) = .6
    gv(3, "b", 0.6, 0.7, 0.5, category="help", principles=("p2", "p2"), lengths=(30, 60)),
    # all ties: wrong on all three, no disagreement. P(first) = .5
    gv(4, "a", 0.5, 0.5, 0.5, lengths=(10, 20)),
    # no swap: right, forward right. P(first) = 0.0
    gv(5, "b", 0.0, 0.0, None, category="harm", lengths=(20, 20)),
    # abstained (orders scored, then too little mass): only counts in n and abstention
    gv(
        6,
        "a",
        None,
        0.9,
        0.1,
        abstained=True,
        category="help",
        principles=("p1",),
        lengths=(999, 1),
    ),
    # right on all three; orders agree. P(first) = (.1 + 1.0) / 2 = .55
    gv(7, "b", 0.05, 0.1, 0.0, category="help"),
]


def test_correct_is_strict_and_a_tie_is_never_correct() -> None:
    assert is_correct(0.51, "a") and not is_correct(0.51, "b")
    assert is_correct(0.49, "b") and not is_correct(0.49, "a")
    assert not is_correct(0.5, "a") and not is_correct(0.5, "b")


def test_counts_and_accuracies_on_a_hard_gold_set() -> None:
    m = evaluate(HARD)
    assert (m.n, m.answered) == (8, 7)
    _assert_wilson(m.accuracy, 5, 7)  # rows 0, 1, 2, 5, 7
    _assert_wilson(m.accuracy_forward, 4, 7)  # rows 0, 1, 5, 7
    _assert_wilson(m.accuracy_swapped, 3, 6)  # rows 0, 2, 7 of the six swapped
    _assert_wilson(m.order_inconsistency, 2, 6)  # rows 1, 2 (row 6 abstained)
    _assert_wilson(m.abstention, 1, 8)


def test_position_and_length_bias_over_answered_items() -> None:
    m = evaluate(HARD)
    firsts = [0.5, 0.75, 0.7, 0.6, 0.5, 0.0, 0.55]
    mean, half = _normal(firsts)
    assert mean == approx(3.6 / 7)
    bias = m.position_bias
    assert bias.n == 7 and bias.value == approx(mean)
    assert bias.low == approx(mean - half) and bias.high == approx(mean + half)

    lb = m.length_bias
    # Decided: rows 0 (a longer, a wins), 1, 2, 3 (longer loses): 1 of 4.
    _assert_wilson(lb.longer_wins, 1, 4)
    assert (lb.length_ties, lb.label_ties) == (2, 1)  # rows 5 (equal), 7 (none); row 4
    assert lb.correlation_n == 6  # row 6 abstained: its lengths (999, 1) are not read
    margins = [0.5, 0.15, -0.1, 0.1, 0.0, -0.5]  # p_a - 0.5; mean 0.025
    diffs = [50, -50, 40, -30, -10, 0]  # len_a - len_b; mean 0
    sxy = 0.5 * 50 + 0.15 * -50 + -0.1 * 40 + 0.1 * -30  # = 10.5
    sxx = 0.475**2 + 0.125**2 + 0.125**2 + 0.075**2 + 0.025**2 + 0.525**2  # = 0.53875
    syy = 50**2 + 50**2 + 40**2 + 30**2 + 10**2  # = 7600
    assert sum(margins) / 6 == approx(0.025) and sum(diffs) == 0
    assert lb.correlation == approx(sxy / math.sqrt(sxx * syy))
    assert lb.correlation == approx(0.16409, abs=1e-5)


def test_calibration_table_and_ece_on_hard_gold() -> None:
    m = evaluate(HARD)
    # (p_a, outcome): bin 0 holds 0.0 and 0.05 (both b); 0.4 -> bin 4; 0.5 -> bin 5;
    # 0.6 (the edge, b) and 0.65 (a) -> bin 6; 1.0 -> the last bin.
    expected = {
        0: (2, 0.025, 0.0),
        4: (1, 0.4, 0.0),
        5: (1, 0.5, 1.0),
        6: (2, 0.625, 0.5),
        9: (1, 1.0, 1.0),
    }
    assert len(m.calibration) == 10
    for i, b in enumerate(m.calibration):
        assert b.low == approx(i / 10) and b.high == approx((i + 1) / 10)
        if i in expected:
            count, predicted, observed = expected[i]
            assert b.count == count
            assert b.mean_predicted == approx(predicted)
            assert b.mean_observed == approx(observed)
        else:
            assert (b.count, b.mean_predicted, b.mean_observed) == (0, None, None)
    ece = (2 * 0.025 + 1 * 0.4 + 1 * 0.5 + 2 * 0.125 + 1 * 0.0) / 7
    assert m.ece == approx(ece)
    assert m.ece == approx(1.2 / 7)


def test_log_loss_on_hard_gold_clips_certain_labels() -> None:
    m = evaluate(HARD)
    eps = 1e-6
    terms = [
        -math.log(1 - eps),  # p 1.0 clipped, answer a
        -math.log(0.65),
        -math.log(1 - 0.4),  # answer b: g = 0, loss -ln(1 - p)
        -math.log(1 - 0.6),
        -math.log(0.5),
        -math.log(1 - eps),  # p 0.0 clipped, answer b
        -math.log(1 - 0.05),
    ]
    mean, half = _normal(terms)
    assert m.log_loss.n == 7
    assert m.log_loss.value == approx(mean)
    assert m.log_loss.low == approx(max(mean - half, 0.0))
    assert m.log_loss.high == approx(mean + half)


def test_a_confident_miss_costs_the_clipped_loss() -> None:
    m = evaluate([gv(0, "b", 1.0, 1.0)])
    assert m.log_loss.value == approx(6 * math.log(10))  # -ln(1e-6)
    assert (m.log_loss.low, m.log_loss.high, m.log_loss.n) == (None, None, 1)
    _assert_wilson(m.accuracy, 0, 1)
    assert m.ece == approx(1.0)  # one item: predicted 1.0, observed 0


SOFT = [
    gv(0, "a", 0.7, p_gold=0.8),  # right; bin 7
    gv(1, "a", 0.4, p_gold=0.6),  # wrong; bin 4
    gv(2, "b", 0.35, p_gold=0.3),  # right; bin 3
    gv(3, "b", 0.05, p_gold=0.1),  # right; bin 0
    gv(4, "b", 0.3, p_gold=0.2),  # right; bin 3 (its low edge)
]


def test_soft_gold_calibrates_against_mean_p_gold() -> None:
    m = evaluate(SOFT)
    _assert_wilson(m.accuracy, 4, 5)
    bins = {i: b for i, b in enumerate(m.calibration) if b.count}
    assert sorted(bins) == [0, 3, 4, 7]
    assert bins[3].count == 2
    assert bins[3].mean_predicted == approx((0.35 + 0.3) / 2)
    assert bins[3].mean_observed == approx((0.3 + 0.2) / 2)  # mean p_gold, not a 0/1 outcome
    assert bins[7].mean_observed == approx(0.8)
    ece = (abs(0.7 - 0.8) + abs(0.4 - 0.6) + 2 * abs(0.325 - 0.25) + abs(0.05 - 0.1)) / 5
    assert m.ece == approx(ece)
    assert m.ece == approx(0.1)


def test_soft_gold_log_loss_is_cross_entropy_with_p_gold() -> None:
    terms = [
        -(0.8 * math.log(0.7) + 0.2 * math.log(0.3)),
        -(0.6 * math.log(0.4) + 0.4 * math.log(0.6)),
        -(0.3 * math.log(0.35) + 0.7 * math.log(0.65)),
        -(0.1 * math.log(0.05) + 0.9 * math.log(0.95)),
        -(0.2 * math.log(0.3) + 0.8 * math.log(0.7)),
    ]
    assert log_loss_terms(SOFT) == approx(terms)
    assert evaluate(SOFT).log_loss.value == approx(sum(terms) / 5)


def test_ties_are_answered_but_never_correct() -> None:
    m = evaluate([gv(0, "a", 0.5, 0.5, 0.5), gv(1, "b", 0.5, 0.5, 0.5), gv(2, "a", 0.9, 0.9)])
    assert m.answered == 3
    _assert_wilson(m.accuracy, 1, 3)
    _assert_wilson(m.accuracy_forward, 1, 3)
    _assert_wilson(m.accuracy_swapped, 0, 2)
    _assert_wilson(m.order_inconsistency, 0, 2)
    # Ties: -ln(0.5) each, whatever the answer.
    assert m.log_loss.value == approx((2 * math.log(2) - math.log(0.9)) / 3)


def test_all_abstained_leaves_only_n_and_abstention() -> None:
    m = evaluate([gv(i, "a", None, 0.8, None, abstained=True) for i in range(3)])
    assert (m.n, m.answered) == (3, 0)
    _assert_wilson(m.abstention, 3, 3)
    assert m.abstention.value == 1.0 and m.abstention.high == 1.0
    for estimate in (m.accuracy, m.accuracy_forward, m.order_inconsistency, m.log_loss):
        assert estimate == NO_ESTIMATE
    assert m.position_bias == NO_ESTIMATE  # the abstained forward score is not read
    assert m.ece is None
    assert all(b.count == 0 for b in m.calibration)


def test_empty_input() -> None:
    m = evaluate([])
    assert (m.n, m.answered) == (0, 0)
    for estimate in (
        m.accuracy,
        m.accuracy_forward,
        m.accuracy_swapped,
        m.order_inconsistency,
        m.position_bias,
        m.abstention,
        m.log_loss,
        m.length_bias.longer_wins,
    ):
        assert estimate == NO_ESTIMATE
    assert m.length_bias.correlation is None
    assert m.ece is None
    assert [(b.low, b.high, b.count) for b in m.calibration] == [
        (i / 10, (i + 1) / 10, 0) for i in range(10)
    ]
    assert m.by_category == {} and m.by_principle == {}


def test_groups_by_category_and_each_distinct_principle() -> None:
    m = evaluate(HARD)
    assert list(m.by_category) == ["harm", "help"]  # row 4 has no category: no group
    harm, help_ = m.by_category["harm"], m.by_category["help"]
    assert (harm.n, harm.answered) == (3, 3)  # rows 0, 1, 5
    _assert_wilson(harm.accuracy, 3, 3)
    assert (help_.n, help_.answered) == (4, 3)  # rows 2, 3, 6 (abstained), 7
    _assert_wilson(help_.accuracy, 2, 3)
    _assert_wilson(help_.abstention, 1, 4)

    assert list(m.by_principle) == ["p1", "p2"]
    p1, p2 = m.by_principle["p1"], m.by_principle["p2"]
    assert (p1.n, p1.answered) == (3, 2)  # rows 0, 1, 6
    _assert_wilson(p1.accuracy, 2, 2)
    assert (p2.n, p2.answered) == (3, 3)  # rows 1, 2, 3: row 3 lists p2 twice, counts once
    _assert_wilson(p2.accuracy, 2, 3)
    _assert_wilson(p2.order_inconsistency, 2, 3)

    for group in (harm, help_, p1, p2):
        assert group.by_category == {} and group.by_principle == {}


def test_metrics_are_json_friendly() -> None:
    m = evaluate(HARD)
    data = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    assert data["n"] == 8
    assert data["accuracy"]["value"] == approx(5 / 7)
    assert data["by_category"]["help"]["abstention"]["n"] == 4
    assert data["calibration"][6]["count"] == 2
    assert data["length_bias"]["label_ties"] == 1
    assert isinstance(m, JudgeMetrics)
    json.dumps(evaluate([]).to_dict(), allow_nan=False)


# --------------------------------------------------------------------------- reliability


def test_reliability_table_on_another_span() -> None:
    # The agreement-style folded table: confidence in [0.5, 1] in 5 bins.
    table = reliability_table(
        [(0.5, 1.0), (0.6, 0.0), (0.65, 1.0), (1.0, 1.0)], bins=5, span=(0.5, 1.0)
    )
    assert [b.count for b in table] == [1, 2, 0, 0, 1]
    assert table[1].low == approx(0.6) and table[1].high == approx(0.7)
    assert table[1].mean_predicted == approx(0.625) and table[1].mean_observed == approx(0.5)
    assert table[4].high == 1.0
    with pytest.raises(ValueError, match="outside"):
        reliability_table([(0.4, 1.0)], bins=5, span=(0.5, 1.0))
    assert expected_calibration_error(reliability_table([])) is None


# --------------------------------------------------------------------------- paired


def test_mcnemar_exact_by_hand() -> None:
    tail = math.comb(10, 0) + math.comb(10, 1) + math.comb(10, 2)  # 1 + 10 + 45 = 56
    assert mcnemar_exact(8, 2) == 2 * tail / 2**10 == 0.109375
    assert mcnemar_exact(2, 8) == 0.109375
    assert mcnemar_exact(5, 0) == 2 / 2**5
    assert mcnemar_exact(3, 3) == 1.0  # 2 * 42 / 64 > 1: capped
    assert mcnemar_exact(0, 0) == 1.0


def _pair_sets() -> tuple[list[GoldVerdict], list[GoldVerdict]]:
    """8 first-only, 2 second-only, 3 both right, 1 both wrong; plus one position the
    second abstained on and one only the first has."""
    first: list[GoldVerdict] = []
    second: list[GoldVerdict] = []
    rows = [(0.9, 0.1)] * 8 + [(0.1, 0.9)] * 2 + [(0.9, 0.8)] * 3 + [(0.2, 0.5)]
    for position, (p_first, p_second) in enumerate(rows):
        first.append(gv(position, "a", p_first))
        second.append(gv(position, "a", p_second))
    first.append(gv(14, "b", 0.1))
    second.append(gv(14, "b", None, abstained=True))
    first.append(gv(15, "b", 0.9))
    return first, second


def test_paired_difference_by_hand() -> None:
    first, second = _pair_sets()
    d = paired_difference(first, second)
    assert (d.n, d.both_answered, d.first_only, d.second_only) == (15, 14, 8, 2)
    diffs = [1.0] * 8 + [-1.0] * 2 + [0.0] * 4
    mean, half = _normal(diffs)
    assert mean == approx(6 / 14)
    assert half == approx(Z * math.sqrt(2 / 49))  # s^2 = 4/7, over n = 14
    assert d.value == approx(mean)
    assert d.low == approx(mean - half) and d.high == approx(mean + half)
    assert d.mcnemar_p == 0.109375

    back = paired_difference(second, first)
    assert (back.first_only, back.second_only) == (2, 8)
    assert back.value == approx(-mean)
    assert back.mcnemar_p == 0.109375
    json.dumps(d.to_dict(), allow_nan=False)


def test_paired_difference_of_nothing_shared() -> None:
    d = paired_difference([gv(0, "a", 0.9)], [gv(1, "a", 0.9)])
    assert (d.value, d.low, d.high, d.n, d.both_answered) == (None, None, None, 0, 0)
    assert d.mcnemar_p == 1.0
    assert paired_difference([], []).mcnemar_p == 1.0


def test_paired_difference_rejects_mismatched_or_repeated_positions() -> None:
    with pytest.raises(ValueError, match="different answers"):
        paired_difference([gv(0, "a", 0.9)], [gv(0, "b", 0.9)])
    with pytest.raises(ValueError, match="twice"):
        paired_difference([gv(0, "a", 0.9), gv(0, "a", 0.8)], [])


# --------------------------------------------------------------------------- gold checks


@pytest.mark.parametrize(
    ("answer", "p_gold"),
    [("a", None), ("b", None), ("a", 0.51), ("a", 1.0), ("b", 0.0), ("b", 0.49)],
)
def test_check_gold_accepts(answer: str, p_gold: float | None) -> None:
    check_gold(answer, p_gold)


@pytest.mark.parametrize(
    ("answer", "p_gold", "message"),
    [
        ("c", None, "'a' or 'b'"),
        ("A", 0.7, "'a' or 'b'"),
        ("a", 1.2, r"\[0, 1\]"),
        ("b", -0.1, r"\[0, 1\]"),
        ("a", math.nan, r"\[0, 1\]"),
        ("a", 0.5, r"above 0\.5"),
        ("a", 0.3, r"above 0\.5"),
        ("b", 0.5, r"below 0\.5"),
        ("b", 0.7, r"below 0\.5"),
    ],
)
def test_check_gold_rejects(answer: str, p_gold: float | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_gold(answer, p_gold)


def test_verdicts_reject_bad_gold_and_probabilities() -> None:
    with pytest.raises(ValueError, match=r"below 0\.5"):
        gv(0, "b", 0.2, p_gold=0.8)
    with pytest.raises(ValueError, match="p_a_swapped"):
        gv(0, "a", 0.5, 0.5, 1.5)
