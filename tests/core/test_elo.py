"""Bradley-Terry / Elo fitting recovers known strengths, and its bootstrap intervals cover
the truth at about their nominal rate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from charter.core.elo import Comparison, RatingError, fit, ratings, win_probability

TRUE = {"base": 0.0, "sft": 120.0, "rl": 260.0, "prompted": -80.0}


def _simulate(
    truth: dict[str, float], prompts: int, rng: np.random.Generator, soft: bool = False
) -> list[Comparison]:
    """Every pair compared once per prompt, in a random order, with Bradley-Terry outcomes."""
    rows = []
    for prompt in range(prompts):
        for a, b in itertools.combinations(truth, 2):
            if rng.random() < 0.5:
                a, b = b, a
            p = win_probability(truth[a], truth[b])
            outcome = p if soft else float(rng.random() < p)
            rows.append(Comparison(a, b, outcome, group=f"p{prompt}"))
    return rows


def test_a_hundred_elo_points_are_a_64_percent_preference() -> None:
    assert win_probability(100, 0) == pytest.approx(0.640, abs=1e-3)
    assert win_probability(0, 0) == 0.5
    assert win_probability(-100, 0) == pytest.approx(1 - win_probability(100, 0))


def test_soft_outcomes_from_the_model_give_back_the_strengths_exactly() -> None:
    rows = _simulate(TRUE, 5, np.random.default_rng(0), soft=True)
    scores = fit(rows, anchor="base", ridge=1e-12)
    assert scores == pytest.approx(TRUE, abs=1e-4)


def test_hard_outcomes_recover_the_strengths_within_their_intervals() -> None:
    rows = _simulate(TRUE, 300, np.random.default_rng(1))
    table = ratings(rows, anchor="base", samples=300, seed=2)
    assert [r.policy for r in table] == ["rl", "sft", "base", "prompted"]
    by_name = {r.policy: r for r in table}
    assert by_name["base"].elo == 0.0 == by_name["base"].low == by_name["base"].high
    for name, truth in TRUE.items():
        rating = by_name[name]
        assert rating.low <= truth <= rating.high, rating
        assert abs(rating.elo - truth) < 40, rating
        assert rating.comparisons == 300 * 3
    assert sum(r.wins for r in table) == pytest.approx(len(rows))


def test_intervals_cover_the_truth_at_about_their_nominal_rate() -> None:
    truth = {"a": 0.0, "b": 80.0, "c": -150.0}
    rng = np.random.default_rng(3)
    covered = checks = 0
    for sim in range(60):
        rows = _simulate(truth, 60, rng)
        for rating in ratings(rows, anchor="a", samples=200, seed=sim):
            if rating.policy != "a":
                checks += 1
                covered += rating.low <= truth[rating.policy] <= rating.high
    # 95% intervals: 114 of 120 expected; too-narrow intervals (e.g. no bootstrap at all)
    # would cover far fewer.
    assert 0.85 <= covered / checks <= 1.0, (covered, checks)


def test_a_policy_that_always_wins_stays_finite_and_first() -> None:
    rows = [Comparison("best", other, 1.0, group=str(i)) for i in range(20) for other in "xy"]
    rows += [Comparison("x", "y", 0.5, group=str(i)) for i in range(20)]
    scores = fit(rows)
    assert scores["best"] > scores["x"] + 500
    assert all(np.isfinite(list(scores.values())))
    assert sum(scores.values()) == pytest.approx(0.0, abs=1e-6)  # no anchor: centred
    assert scores["x"] == pytest.approx(scores["y"], abs=1e-6)


def test_order_within_a_comparison_does_not_matter() -> None:
    rows = _simulate(TRUE, 50, np.random.default_rng(4))
    flipped = [Comparison(r.b, r.a, 1 - r.p_a, r.group) for r in rows]
    assert fit(flipped, anchor="base") == pytest.approx(fit(rows, anchor="base"), abs=1e-6)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "no comparisons"),
        ([Comparison("a", "a", 1.0)], "with itself"),
        ([Comparison("a", "b", 1.5)], "p_a must lie in"),
        ([Comparison("a", "b", float("nan"))], "p_a must lie in"),
        ([Comparison("a", "b", 1.0), Comparison("c", "d", 0.0)], "never compared"),
    ],
)
def test_comparisons_that_cannot_rate_are_refused(rows: list[Comparison], message: str) -> None:
    with pytest.raises(RatingError, match=message):
        ratings(rows, samples=10)


def test_an_unknown_anchor_is_refused() -> None:
    with pytest.raises(RatingError, match="anchor 'z'"):
        fit([Comparison("a", "b", 1.0)], anchor="z")
