"""Elo scores of policies from pairwise comparisons: Bradley-Terry, bootstrap intervals.

The paper reports policies as Elo scores fitted to pairwise preferences (Bai et al. 2022,
Fig. 2/3). Under Bradley-Terry, policy ``a`` is preferred to ``b`` with probability
``sigmoid(theta_a - theta_b)``; Elo is the same scale times ``400 / ln 10``, so 100 Elo points mean a
64% preference. A comparison's outcome may be soft (a judge's P(A), or 0.5 for a tie):
the fit maximises ``sum p log sigmoid(d) + (1 - p) log sigmoid(-d)``, which for hard outcomes is the
usual likelihood.

Scores are only defined up to a shift: they are reported relative to an ``anchor`` policy
(the base model, at 0) or, without one, centred on their mean. A small ridge keeps a
policy that won or lost every comparison finite (its prior is a normal with standard
deviation ``1/sqrt(ridge)`` logits, ~1,700 Elo at the default, so it moves nothing else).

Intervals are percentile bootstrap intervals, resampling *groups* (the prompts): every
comparison made on one prompt shares that prompt's difficulty, so resampling single
comparisons would make the intervals too narrow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ELO_PER_LOGIT = 400 / math.log(10)
RIDGE = 1e-2
MAX_NEWTON_STEPS = 100


@dataclass(frozen=True)
class Comparison:
    """``a`` against ``b``: ``p_a`` is how much ``a`` was preferred (1 win, 0 loss,
    0.5 a tie, or a judge's probability); ``group`` is what was compared on (the prompt)."""

    a: str
    b: str
    p_a: float
    group: str | None = None


@dataclass(frozen=True)
class Rating:
    policy: str
    elo: float
    low: float
    high: float
    comparisons: int
    wins: float
    """Sum of the policy's outcomes: its expected number of wins."""


class RatingError(ValueError):
    """The comparisons cannot rate the policies (none, bad outcomes, disconnected)."""


def _check(comparisons: Sequence[Comparison]) -> list[str]:
    if not comparisons:
        raise RatingError("no comparisons to rate")
    for i, c in enumerate(comparisons):
        if c.a == c.b:
            raise RatingError(f"comparison {i} compares {c.a!r} with itself")
        if not 0.0 <= c.p_a <= 1.0 or math.isnan(c.p_a):
            raise RatingError(f"comparison {i}: p_a must lie in [0, 1], got {c.p_a}")
    policies = sorted({c.a for c in comparisons} | {c.b for c in comparisons})
    # Connected: otherwise two groups' scores have no common scale.
    linked = {policies[0]}
    grew = True
    while grew:
        grew = False
        for c in comparisons:
            if (c.a in linked) != (c.b in linked):
                linked |= {c.a, c.b}
                grew = True
    if len(linked) < len(policies):
        apart = sorted(set(policies) - linked)
        raise RatingError(
            f"policies {apart} were never compared, directly or through others, "
            f"with {sorted(linked)}: their scores would share no scale"
        )
    return policies


def _fit(
    index_a: np.ndarray,
    index_b: np.ndarray,
    p: np.ndarray,
    weight: np.ndarray,
    k: int,
    ridge: float,
) -> np.ndarray:
    """Bradley-Terry strengths (logits, sum zero) by damped Newton steps on the
    weighted, ridge-penalised negative log-likelihood (convex: the steps converge)."""

    def loss(theta: np.ndarray) -> float:
        d = theta[index_a] - theta[index_b]
        nll = weight * (p * np.logaddexp(0, -d) + (1 - p) * np.logaddexp(0, d))
        return float(nll.sum() + 0.5 * ridge * theta @ theta)

    theta: np.ndarray = np.zeros(k)
    current = loss(theta)
    for _ in range(MAX_NEWTON_STEPS):
        d = theta[index_a] - theta[index_b]
        q = 1 / (1 + np.exp(-d))
        residual = weight * (q - p)
        gradient = ridge * theta
        np.add.at(gradient, index_a, residual)
        np.add.at(gradient, index_b, -residual)
        curvature = weight * q * (1 - q)
        hessian = ridge * np.eye(k)
        np.add.at(hessian, (index_a, index_a), curvature)
        np.add.at(hessian, (index_b, index_b), curvature)
        np.add.at(hessian, (index_a, index_b), -curvature)
        np.add.at(hessian, (index_b, index_a), -curvature)
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while True:  # backtracking: never accept a step that makes the fit worse
            candidate = theta - size * step
            value = loss(candidate)
            if value <= current or size < 1e-6:
                break
            size /= 2
        theta, converged = candidate, abs(current - value) < 1e-12 * max(1.0, abs(current))
        current = value
        if converged or np.max(np.abs(size * step)) < 1e-10:
            break
    centred: np.ndarray = theta - theta.mean()
    return centred


def fit(
    comparisons: Sequence[Comparison], *, anchor: str | None = None, ridge: float = RIDGE
) -> dict[str, float]:
    """Each policy's Elo score: 0 for ``anchor``, else centred on the mean."""
    policies = _check(comparisons)
    return _scores(policies, comparisons, np.ones(len(comparisons)), anchor, ridge)


def _scores(
    policies: list[str],
    comparisons: Sequence[Comparison],
    weight: np.ndarray,
    anchor: str | None,
    ridge: float,
) -> dict[str, float]:
    if anchor is not None and anchor not in policies:
        raise RatingError(f"anchor {anchor!r} is not among the compared policies {policies}")
    position = {name: i for i, name in enumerate(policies)}
    index_a = np.array([position[c.a] for c in comparisons])
    index_b = np.array([position[c.b] for c in comparisons])
    p = np.array([c.p_a for c in comparisons], dtype=float)
    theta = _fit(index_a, index_b, p, weight, len(policies), ridge) * ELO_PER_LOGIT
    if anchor is not None:
        theta = theta - theta[position[anchor]]
    return {name: float(theta[i]) for name, i in position.items()}


def ratings(
    comparisons: Sequence[Comparison],
    *,
    anchor: str | None = None,
    samples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    ridge: float = RIDGE,
) -> list[Rating]:
    """Elo scores with percentile bootstrap intervals over groups, best first.

    Each bootstrap sample draws as many groups as there are, with replacement; a group
    drawn twice counts twice (as weights, so the fit is the same size each time)."""
    if samples < 1:
        raise RatingError("samples must be at least 1")
    if not 0 < level < 1:
        raise RatingError("level must lie in (0, 1)")
    policies = _check(comparisons)
    point = _scores(policies, comparisons, np.ones(len(comparisons)), anchor, ridge)
    groups = sorted(
        {c.group if c.group is not None else f"#{i}" for i, c in enumerate(comparisons)}
    )
    of_group = {g: i for i, g in enumerate(groups)}
    group_index = np.array(
        [of_group[c.group if c.group is not None else f"#{i}"] for i, c in enumerate(comparisons)]
    )
    rng = np.random.default_rng(seed)
    draws = np.empty((samples, len(policies)))
    for s in range(samples):
        counts = np.bincount(rng.integers(0, len(groups), len(groups)), minlength=len(groups))
        weight = counts[group_index].astype(float)
        scores = _scores(policies, comparisons, weight, anchor, ridge)
        draws[s] = [scores[name] for name in policies]
    tail = (1 - level) / 2
    low, high = np.quantile(draws, [tail, 1 - tail], axis=0)
    rows = []
    for i, name in enumerate(policies):
        mine = [c for c in comparisons if name in (c.a, c.b)]
        wins = sum(c.p_a if c.a == name else 1 - c.p_a for c in mine)
        rows.append(Rating(name, point[name], float(low[i]), float(high[i]), len(mine), wins))
    return sorted(rows, key=lambda r: -r.elo)


def win_probability(elo_a: float, elo_b: float) -> float:
    """P(a preferred to b) for two Elo scores."""
    return 1 / (1 + math.exp(-(elo_a - elo_b) / ELO_PER_LOGIT))
