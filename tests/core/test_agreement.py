"""Agreement numbers against values computed by hand (and published examples)."""

from __future__ import annotations

import pytest

from charter.core import agreement, judge_stats
from charter.core.agreement import Judgement


def test_rates_have_published_wilson_intervals() -> None:
    # 8 of 10: the textbook Wilson 95% interval (0.4902, 0.9433).
    r = agreement.rate(8, 10)
    assert (r.low, r.high) == pytest.approx((0.4902, 0.9433), abs=5e-5)
    # 0 of 10: the lower bound is 0, the upper z^2 / (n + z^2).
    z2 = judge_stats.Z95**2
    none = agreement.rate(0, 10)
    assert (none.low, none.high) == pytest.approx((0.0, z2 / (10 + z2)))
    every = agreement.rate(10, 10)
    assert (every.low, every.high) == pytest.approx((10 / (10 + z2), 1.0))
    with pytest.raises(ValueError):
        agreement.rate(11, 10)


def test_rate_of_nothing_has_no_interval() -> None:
    assert agreement.rate(0, 0) == agreement.Rate(0, 0, None, None, None)
    r = agreement.rate(8, 10)
    assert r.rate == 0.8 and r.low == pytest.approx(0.4902, abs=5e-5)


def _pairs(counts: dict[tuple[str, str], int]) -> tuple[list[str], list[str]]:
    first, second = [], []
    for (a, b), n in counts.items():
        first += [a] * n
        second += [b] * n
    return first, second


def test_cohen_kappa_matches_hand_computed_examples() -> None:
    # p_o = 0.7, p_e = 0.5*0.6 + 0.5*0.4 = 0.5: kappa = 0.4.
    a, b = _pairs({("y", "y"): 20, ("y", "n"): 5, ("n", "y"): 10, ("n", "n"): 15})
    assert agreement.cohen_kappa(a, b) == pytest.approx(0.4)
    # p_o = 0.6, p_e = 0.6*0.7 + 0.4*0.3 = 0.54: kappa = 0.06 / 0.46.
    a, b = _pairs({("y", "y"): 45, ("y", "n"): 15, ("n", "y"): 25, ("n", "n"): 15})
    assert agreement.cohen_kappa(a, b) == pytest.approx(0.06 / 0.46)
    # Three categories: p_o = 4/6, p_e = (2*2 + 2*1 + 2*3) / 36 = 1/3: kappa = 0.5.
    a = ["A", "A", "B", "B", "tie", "tie"]
    b = ["A", "B", "B", "tie", "tie", "tie"]
    assert agreement.cohen_kappa(a, b) == pytest.approx(0.5)
    assert agreement.cohen_kappa(["A"] * 4, ["A"] * 4) is None  # chance agreement 1
    assert agreement.cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        agreement.cohen_kappa(["A"], [])


def _j(label: int, reviewer: str, answer: str, agrees: bool, **kw: object) -> Judgement:
    values: dict[str, object] = {"principle": "p1", "model": "m", "confidence": None} | kw
    return Judgement(label, reviewer, answer, agrees, **values)  # type: ignore[arg-type]


def test_pairwise_kappa_is_the_mean_over_reviewer_pairs() -> None:
    # r1 and r2 share labels 1-6 (kappa 0.5 as above); r1 and r3 share 1-2 (A/A, A/B:
    # p_o 0.5, p_e (2*1)/4 = 0.5 -> kappa 0); r2 and r3 share 1-2 (A/A, B/B: kappa 1).
    r1 = ["A", "A", "B", "B", "tie", "tie"]
    r2 = ["A", "B", "B", "tie", "tie", "tie"]
    judgements = [_j(i + 1, "r1", r1[i], True) for i in range(6)]
    judgements += [_j(i + 1, "r2", r2[i], True) for i in range(6)]
    judgements += [_j(1, "r3", "A", True), _j(2, "r3", "B", True), _j(9, "r3", "A", True)]
    kappa = agreement.pairwise_kappa(judgements)
    assert kappa.mean == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert (kappa.pairs, kappa.undefined_pairs, kappa.items) == (3, 0, 6)
    # One reviewer only: no kappa, no shared items.
    alone = agreement.pairwise_kappa([_j(1, "r1", "A", True)])
    assert alone == agreement.Kappa(None, 0, 0, 0)
    # Both always "A" on the shared labels: undefined, counted apart.
    same = agreement.pairwise_kappa([_j(1, "r1", "A", True), _j(1, "r2", "A", True)])
    assert same == agreement.Kappa(None, 0, 1, 1)


def test_report_groups_by_principle_model_and_confidence() -> None:
    judgements = [
        _j(1, "r1", "A", True, principle="p1", model="m1", confidence=0.55),
        _j(2, "r1", "B", False, principle="p1", model="m1", confidence=0.58),
        _j(3, "r1", "A", True, principle="p2", model="m2", confidence=0.95),
        _j(4, "r1", "A", True, principle="p2", model="m2", confidence=1.0),
        _j(4, "r2", "B", False, principle="p2", model="m2", confidence=1.0),
    ]
    report = agreement.report(judgements)
    assert report.overall == agreement.rate(3, 5)
    assert report.by_principle == {"p1": agreement.rate(1, 2), "p2": agreement.rate(2, 3)}
    assert report.by_model == {"m1": agreement.rate(1, 2), "m2": agreement.rate(2, 3)}
    bins = {(round(b.low, 1), round(b.high, 1)): b.rate for b in report.calibration}
    assert bins[(0.5, 0.6)] == agreement.rate(1, 2)
    assert bins[(0.9, 1.0)] == agreement.rate(2, 3)  # 1.0 falls in the last, closed bin
    assert bins[(0.7, 0.8)] == agreement.rate(0, 0)
    assert len(report.calibration) == 5
    assert (report.labels, report.reviewers) == (4, 2)
    assert report.kappa.items == 1
    # Without confidences (revisions) there is no calibration.
    assert agreement.report([_j(1, "r1", "yes", True)]).calibration == []


def test_one_verdict_agrees_with_the_ai_label() -> None:
    assert agreement.ai_choice(0.5) == "A" and agreement.ai_choice(0.49) == "B"
    assert agreement.ai_confidence(0.2) == pytest.approx(0.8)
    assert agreement.agrees(p_a=0.7, choice="A", satisfies=None)
    assert not agreement.agrees(p_a=0.7, choice="B", satisfies=None)
    assert not agreement.agrees(p_a=0.7, choice="tie", satisfies=None)
    assert agreement.agrees(p_a=None, choice=None, satisfies=True)
    assert not agreement.agrees(p_a=None, choice=None, satisfies=False)
    assert agreement.answer(choice=None, satisfies=False) == "no"
