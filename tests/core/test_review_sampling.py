"""Review queues' samples: reproducible, proportional, every stratum represented."""

from __future__ import annotations

from collections import Counter

import pytest

from charter.core.review_sampling import Candidate, allocate, confidence_bin, sample, stratum_of


def _pool() -> list[Candidate]:
    # 60 labels of principle "p1", 30 of "p2", 10 of "p3"; P(A) spread over [0, 1).
    out = []
    for i in range(100):
        principle = "p1" if i < 60 else "p2" if i < 90 else "p3"
        out.append(Candidate(i + 1, (principle,), (i * 37 % 100) / 100, i % 4 == 0))
    return out


def test_the_same_seed_draws_the_same_sample_in_any_input_order() -> None:
    pool = _pool()
    first = sample(pool, 20, "random", seed=7)
    assert sample(list(reversed(pool)), 20, "random", seed=7) == first
    assert sample(pool, 20, "random", seed=8) != first
    assert len({p.label_id for p in first}) == 20
    assert [p.label_id for p in first] == sorted(p.label_id for p in first)
    strat = sample(pool, 20, "stratified", "principle", seed=3)
    assert sample(list(reversed(pool)), 20, "stratified", "principle", seed=3) == strat


def test_random_asks_for_more_than_there_is() -> None:
    assert len(sample(_pool()[:5], 50, "random")) == 5
    with pytest.raises(ValueError):
        sample(_pool(), 0, "random")


def test_stratified_is_proportional() -> None:
    picks = sample(_pool(), 20, "stratified", "principle", seed=1)
    assert Counter(p.stratum for p in picks) == {"p1": 12, "p2": 6, "p3": 2}
    by_id = {c.label_id: c for c in _pool()}
    assert all(by_id[p.label_id].principle_ids == (p.stratum,) for p in picks)


def test_every_stratum_gets_one_when_size_allows() -> None:
    # Proportional shares of 3 over 60/30/10 are 1.8/0.9/0.3: p3 would get none.
    assert allocate({"p1": 60, "p2": 30, "p3": 10}, 3) == {"p1": 1, "p2": 1, "p3": 1}
    assert allocate({"p1": 60, "p2": 30, "p3": 10}, 2) == {"p1": 1, "p2": 1, "p3": 0}
    assert allocate({"a": 1, "b": 98, "c": 1}, 10) == {"a": 1, "b": 8, "c": 1}
    assert allocate({"a": 2, "b": 3}, 10) == {"a": 2, "b": 3}  # capped by what there is
    assert allocate({"a": 5, "b": 5}, 5) == {"a": 3, "b": 2}  # ties: by name
    counts = Counter(p.stratum for p in sample(_pool(), 3, "stratified", "principle"))
    assert counts == {"p1": 1, "p2": 1, "p3": 1}


def test_confidence_bins_are_of_the_margin() -> None:
    assert confidence_bin(0.5) == "0.0-0.1"
    assert confidence_bin(0.45) == "0.0-0.1"
    assert confidence_bin(0.61) == "0.1-0.2"
    assert confidence_bin(0.15) == "0.3-0.4"
    assert confidence_bin(1.0) == "0.4-0.5"
    assert confidence_bin(0.0) == "0.4-0.5"
    picks = sample(_pool(), 25, "stratified", "confidence", seed=2)
    by_id = {c.label_id: c for c in _pool()}
    for pick in picks:
        p_a = by_id[pick.label_id].p_a
        assert p_a is not None and pick.stratum == confidence_bin(p_a)
    assert len(Counter(p.stratum for p in picks)) == 5
    # Labels without P(A) (revisions) have no confidence stratum.
    assert stratum_of(Candidate(1, ("p",)), "confidence") is None


def test_swap_disagreement_strata_and_restriction() -> None:
    pool = [*_pool(), Candidate(1000, ("p1",), 0.7, None)]  # not swapped
    picks = sample(pool, 8, "stratified", "swap_disagreement", seed=4)
    assert Counter(p.stratum for p in picks) == {"agree": 6, "disagree": 2}
    assert 1000 not in {p.label_id for p in picks}
    # random with 'by' keeps only labels the stratification applies to.
    assert len(sample(pool, 500, "random", "swap_disagreement")) == 100
    with pytest.raises(ValueError):
        sample(pool, 5, "stratified")
