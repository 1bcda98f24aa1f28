"""The Polis-style analysis finds planted opinion groups, puts the planted consensus first
and flags the planted divisive statements, without reading unseen statements as
disagreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from charter.core.collective import (
    Analysis,
    AnalysisError,
    analyse,
    candidates,
    consensus_ranking,
    divisive,
    impute,
)
from charter.core.public_input import PublicInput, Statement

SIZES = (90, 75, 60)
STATEMENTS = 40
CONSENSUS = [f"s{j}" for j in range(6)]
DIVISIVE = [f"s{j}" for j in range(6, 12)]
SPARSE = 5
"""Participants who vote on 4 statements only: below the default min_votes of 7."""

AGREE, DISAGREE, PASS = 1.0, -1.0, 0.0


def _planted(seed: int = 0, coverage: float = 0.6) -> tuple[PublicInput, np.ndarray]:
    """Three opinion groups voting on a random ``coverage`` of 40 statements: 6 that every
    group agrees with (p = 0.85), 6 that one group agrees with (0.9) and another rejects
    (0.9) while the third is split, and 28 where each group leans its own way (agree or
    disagree, 0.75), never all three alike. Then SPARSE near-silent participants.
    Returns the input and the planted group of each grouped participant."""
    rng = np.random.default_rng(seed)
    k = len(SIZES)
    probs = np.empty((k, STATEMENTS, 3))  # P(agree), P(disagree), P(pass)
    probs[:, : len(CONSENSUS)] = (0.85, 0.10, 0.05)
    pairs = [(0, 1), (1, 2), (0, 2)]
    for d in range(len(DIVISIVE)):
        j = len(CONSENSUS) + d
        yes, no = pairs[d % len(pairs)]
        probs[:, j] = (0.3, 0.3, 0.4)
        probs[yes, j] = (0.9, 0.05, 0.05)
        probs[no, j] = (0.05, 0.9, 0.05)
    leaning = np.array([(0.15, 0.75, 0.10), (0.75, 0.15, 0.10)])
    for j in range(len(CONSENSUS) + len(DIVISIVE), STATEMENTS):
        leans = rng.permutation([1, 1, 0] if rng.random() < 0.5 else [0, 0, 1])
        probs[:, j] = leaning[leans]
    truth = np.repeat(np.arange(k), SIZES)
    votes = np.full((len(truth) + SPARSE, STATEMENTS), np.nan)
    for i, g in enumerate(truth):
        shown = rng.random(STATEMENTS) < coverage
        for j in np.flatnonzero(shown):
            votes[i, j] = rng.choice([AGREE, DISAGREE, PASS], p=probs[g, j])
    for i in range(len(truth), len(votes)):
        votes[i, rng.choice(STATEMENTS, 4, replace=False)] = AGREE
    return _input(votes), truth


def _input(votes: np.ndarray) -> PublicInput:
    return PublicInput(
        tuple(Statement(f"s{j}", f"statement {j}") for j in range(votes.shape[1])),
        tuple(f"p{i}" for i in range(votes.shape[0])),
        votes,
    )


@pytest.fixture(scope="module")
def planted() -> tuple[PublicInput, np.ndarray, Analysis]:
    data, truth = _planted()
    return data, truth, analyse(data)


def test_the_planted_opinion_groups_are_found(
    planted: tuple[PublicInput, np.ndarray, Analysis],
) -> None:
    _, truth, analysis = planted
    assert analysis.k == 3
    assert analysis.silhouettes[3] == max(analysis.silhouettes.values())
    assert sorted(analysis.silhouettes) == [2, 3, 4, 5]
    grouped = [p.group for p in analysis.participants if p.group is not None]
    ari = adjusted_rand_score(truth, grouped)
    assert ari >= 0.9, f"adjusted Rand index {ari:.3f}"
    assert [g.size for g in analysis.groups] == sorted(
        (g.size for g in analysis.groups), reverse=True
    )
    assert sum(g.size for g in analysis.groups) == len(truth)
    assert len(analysis.explained_variance_ratio) == 2
    assert 0 < sum(analysis.explained_variance_ratio) < 1


def test_the_planted_consensus_ranks_first_and_makes_the_candidates(
    planted: tuple[PublicInput, np.ndarray, Analysis],
) -> None:
    _, _, analysis = planted
    ranking = consensus_ranking(analysis)
    assert {s.id for s in ranking[: len(CONSENSUS)]} == set(CONSENSUS)
    assert [s.consensus for s in ranking] == sorted((s.consensus for s in ranking), reverse=True)
    assert {s.id for s in candidates(analysis)} >= set(CONSENSUS)
    for s in ranking[: len(CONSENSUS)]:
        assert s.consensus == pytest.approx(math.prod(g.p_agree for g in s.groups))
        assert s.divisiveness < 0.3


def test_the_planted_divisive_statements_are_divisive_and_never_candidates(
    planted: tuple[PublicInput, np.ndarray, Analysis],
) -> None:
    _, _, analysis = planted
    flagged = {s.id for s in divisive(analysis)}
    chosen = {s.id for s in candidates(analysis)}
    assert set(DIVISIVE) <= flagged
    assert not set(DIVISIVE) & chosen
    assert not set(CONSENSUS) & flagged
    scores = [s.divisiveness for s in divisive(analysis)]
    assert scores == sorted(scores, reverse=True)
    assert all(0.5 <= d < 1 for d in scores)


def test_participants_below_min_votes_are_listed_but_not_grouped(
    planted: tuple[PublicInput, np.ndarray, Analysis],
) -> None:
    data, truth, analysis = planted
    excluded = analysis.excluded
    assert [p.id for p in excluded] == list(data.participants[len(truth) :])
    assert all(p.n_votes == 4 and p.x is not None and p.y is not None for p in excluded)
    assert all(p.n_votes >= 7 for p in analysis.participants if p.group is not None)
    stricter = analyse(data, min_votes=30)
    assert all(p.n_votes >= 30 for p in stricter.participants if p.group is not None)
    assert len(stricter.excluded) > len(excluded)


def test_a_fixed_seed_gives_the_same_analysis(
    planted: tuple[PublicInput, np.ndarray, Analysis],
) -> None:
    data, _, analysis = planted
    assert analyse(data) == analysis


def _two_camps() -> np.ndarray:
    """20 + 20 participants in opposite camps on s0-s9; camp A agrees with s10 while
    camp B never saw it."""
    camp = np.array([AGREE] * 5 + [DISAGREE] * 5)
    votes = np.vstack([np.tile(camp, (20, 1)), np.tile(-camp, (20, 1))])
    unseen = np.full((40, 1), np.nan)
    unseen[:20] = AGREE
    return np.hstack([votes, unseen])


def test_a_statement_a_group_never_saw_is_not_counted_as_its_disagreement() -> None:
    votes = _two_camps()
    as_missing = analyse(_input(votes), seed=1)
    as_disagreement = votes.copy()
    as_disagreement[np.isnan(as_disagreement)] = DISAGREE
    as_rejected = analyse(_input(as_disagreement), seed=1)
    assert as_missing.k == as_rejected.k == 2

    unseen = as_missing.statements[10]
    camp_b = next(g for g in unseen.groups if g.agree == 0)
    assert (camp_b.seen, camp_b.disagree, camp_b.p_agree) == (0, 0, 0.5)
    rejected = as_rejected.statements[10]
    assert unseen.consensus == pytest.approx(21 / 22 * 1 / 2)
    assert rejected.consensus == pytest.approx(21 / 22 * 1 / 22)
    assert unseen.consensus > 10 * rejected.consensus
    assert unseen.id not in {s.id for s in divisive(as_missing)}
    assert rejected.id in {s.id for s in divisive(as_rejected)}


def test_missing_votes_are_imputed_with_the_statements_mean_vote() -> None:
    votes = np.array([[AGREE, np.nan], [AGREE, DISAGREE], [np.nan, PASS], [np.nan, np.nan]])
    rows = np.array([True, True, True, False])
    filled = impute(votes, rows)
    assert filled.tolist() == [[1.0, -0.5], [1.0, -1.0], [1.0, 0.0], [1.0, -0.5]]


def test_the_planted_consensus_survives_only_when_missing_is_missing(
    planted: tuple[PublicInput, np.ndarray, Analysis],
) -> None:
    data, _, analysis = planted
    filled = np.where(np.isnan(data.votes), DISAGREE, data.votes)
    honest = {s.id for s in candidates(analysis)}
    pessimistic = {s.id for s in candidates(analyse(_input(filled)))}
    assert set(CONSENSUS) <= honest
    assert not set(CONSENSUS) & pessimistic


def test_group_counts_use_a_laplace_prior() -> None:
    votes = np.array(
        [[AGREE] * 7 + [AGREE], [AGREE] * 7 + [DISAGREE], [AGREE] * 7 + [PASS]]
        + [[DISAGREE] * 7 + [np.nan]] * 3
    )
    analysis = analyse(_input(votes))
    assert analysis.k == 2
    last = analysis.statements[7]
    counts = sorted((g.agree, g.disagree, g.passed, g.seen) for g in last.groups)
    assert counts == [(0, 0, 0, 0), (1, 1, 1, 3)]
    voted = next(g for g in last.groups if g.seen == 3)
    assert (voted.p_agree, voted.p_disagree) == (2 / 5, 2 / 5)
    assert last.disagree_consensus == pytest.approx(2 / 5 * 1 / 2)


def test_too_few_participants_make_one_group() -> None:
    votes = np.array([[AGREE] * 8, [DISAGREE] * 8])
    analysis = analyse(_input(votes))
    assert (analysis.k, analysis.silhouettes) == (1, {})
    assert [g.size for g in analysis.groups] == [2]
    assert all(s.divisiveness == 0.0 for s in analysis.statements)


def test_a_participant_without_votes_has_no_position() -> None:
    votes = np.vstack([_two_camps(), np.full((1, 11), np.nan)])
    analysis = analyse(_input(votes))
    silent = analysis.participants[-1]
    assert (silent.group, silent.x, silent.y, silent.n_votes) == (None, None, None, 0)


def test_nothing_to_analyse_is_an_error() -> None:
    with pytest.raises(AnalysisError, match="at least 7 votes"):
        analyse(_input(np.array([[AGREE] * 6] * 3)))
    with pytest.raises(AnalysisError):
        analyse(_input(_two_camps()), max_groups=0)
