"""Opinion groups, consensus and divisiveness of public votes, as Polis computes them. Pure.

Collective Constitutional AI (Huang et al. 2024) turned about 1,000 people's Polis votes
into a constitution: the statements that every opinion group agreed with went in, those
that split the groups were left out. A majority vote would not do: a large group could
carry statements a smaller group rejects. So the analysis, following Polis:

1. **Participants.** Those with fewer than ``min_votes`` votes (passes count) are left out
   of the groups (Polis uses 7): a handful of votes places nobody reliably. They are still
   listed, and projected onto the map when they voted at all.
2. **Projection.** PCA (two components, fewer when the data has fewer) of the vote matrix
   of the grouped participants. A missing vote is imputed with the statement's mean vote
   among the grouped participants who voted on it: after centring it contributes nothing,
   whereas filling 0 would read "not seen" as "pass" and -1 as disagreement. Because the
   imputed entries pull a sparse voter towards the centre, each projection is scaled by
   ``sqrt(n_statements / n_votes)``, as Polis does.
3. **Groups.** k-means on the 2-D projection for k = 2 .. ``max_groups``, keeping the k
   with the best silhouette score; one group when there are too few participants (or
   distinct positions) for two. Groups are numbered by size, largest first.
4. **Statements, per group.** Agree, disagree and pass counts among the group's members
   who saw the statement, and the agreement probability under a Beta(1, 1) (Laplace)
   prior, ``(agree + 1) / (seen + 2)``, as Polis: a group that never saw a statement sits
   at 1/2, unknown, rather than at 0. Disagreement likewise.
5. **Group-informed consensus**: the product over groups of the agreement probability
   (Polis' ``group-aware-consensus``); high only when *every* group agrees, whatever its
   size. ``disagree_consensus`` is the same product of disagreement probabilities.
6. **Divisiveness**: half the spread between the most and the least favourable group's
   net lean, ``lean_g = p_agree_g - p_disagree_g`` in (-1, 1), so
   ``divisiveness = (max_g lean_g - min_g lean_g) / 2`` in [0, 1). It is near 0 when the
   groups lean alike and near 1 when one group agrees as firmly as another disagrees. The
   net lean rather than the agreement probability alone, because a group that mostly
   passes is undecided, not opposed: a statement one group likes and another shrugs at is
   no consensus (it fails :func:`candidates`) but it does not split the public. Polis'
   representativeness is not used: it ranks statements *for one group* (what sets it
   apart), not how much a statement divides the groups. The prior shrinks small groups'
   leans towards 0, so a few members cannot make a statement look divisive alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charter.core.public_input import PublicInput

# scikit-learn is imported where it is used: with scipy and pandas it is ~170 MiB and
# 1.5 s of start-up that every gateway process would pay for a route few deployments call.

COMPONENTS = 2
KMEANS_RESTARTS = 10
SILHOUETTE_SAMPLE = 5_000
"""Above this many grouped participants the silhouette is estimated on a seeded sample:
the exact score needs all pairwise distances (quadratic memory)."""


class AnalysisError(ValueError):
    """The votes cannot be analysed (bad parameters, nobody with enough votes)."""


@dataclass(frozen=True)
class GroupVotes:
    """One group's votes on one statement, among the members who saw it."""

    agree: int
    disagree: int
    passed: int
    seen: int
    p_agree: float
    """``(agree + 1) / (seen + 2)``: 1/2 when the group never saw the statement."""
    p_disagree: float


@dataclass(frozen=True)
class StatementResult:
    id: str
    text: str
    groups: tuple[GroupVotes, ...]
    """Indexed like :attr:`Analysis.groups`."""
    consensus: float
    """Product over groups of ``p_agree``."""
    disagree_consensus: float
    """Product over groups of ``p_disagree``."""
    divisiveness: float
    """``(max - min) / 2`` of the groups' ``p_agree - p_disagree`` (module doc)."""


@dataclass(frozen=True)
class ParticipantResult:
    id: str
    group: int | None
    """None when the participant cast fewer than ``min_votes`` votes."""
    x: float | None
    y: float | None
    """Position on the opinion map; None when the participant cast no vote at all, y 0.0
    when the data has a single component."""
    n_votes: int


@dataclass(frozen=True)
class Group:
    index: int
    size: int
    x: float
    y: float
    """The members' mean position."""


@dataclass(frozen=True)
class Analysis:
    participants: tuple[ParticipantResult, ...]
    statements: tuple[StatementResult, ...]
    groups: tuple[Group, ...]
    k: int
    """Groups chosen: the best silhouette among ``silhouettes``, or 1."""
    silhouettes: dict[int, float]
    """Silhouette score of each k tried (none when one group was forced)."""
    explained_variance_ratio: tuple[float, ...]
    """Share of the grouped participants' vote variance each component explains."""
    min_votes: int

    @property
    def excluded(self) -> tuple[ParticipantResult, ...]:
        """Participants left out of the groups for voting too little."""
        return tuple(p for p in self.participants if p.group is None)


# ----------------------------------------------------------------------------- steps


def impute(votes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``votes`` with each missing vote replaced by the statement's mean vote among
    ``rows`` (a mask) who voted on it; 0 for a statement none of them voted on."""
    fit = votes[rows]
    seen = ~np.isnan(fit)
    counts = seen.sum(axis=0)
    totals = np.where(seen, fit, 0.0).sum(axis=0)
    means = np.divide(totals, counts, out=np.zeros(votes.shape[1]), where=counts > 0)
    filled: np.ndarray = np.where(np.isnan(votes), means, votes)
    return filled


def project(
    votes: np.ndarray, rows: np.ndarray, n_votes: np.ndarray, seed: int
) -> tuple[np.ndarray, tuple[float, ...]]:
    """Every participant's position (n x 2) from a PCA fitted on ``rows``, scaled by
    ``sqrt(n_statements / n_votes)``; NaN for a participant with no vote. Zeros, and no
    components, when the fitted votes do not vary."""
    n_statements = votes.shape[1]
    filled = impute(votes, rows)
    fit = filled[rows]
    components = min(COMPONENTS, fit.shape[0], n_statements)
    positions = np.zeros((votes.shape[0], COMPONENTS))
    ratios: tuple[float, ...] = ()
    if components > 0 and float(fit.var(axis=0).sum()) > 1e-12:
        from sklearn.decomposition import PCA  # type: ignore[import-untyped]

        pca = PCA(n_components=components, svd_solver="full", random_state=seed).fit(fit)
        positions[:, :components] = pca.transform(filled)
        ratios = tuple(float(r) for r in pca.explained_variance_ratio_)
    scale = np.sqrt(n_statements / np.maximum(n_votes, 1))
    positions *= scale[:, None]
    positions[n_votes == 0] = np.nan
    return positions, ratios


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered largest group first (ties: the group met first), so group 0
    means the same thing however k-means happened to number them."""
    sizes = np.bincount(labels)
    first = {int(g): i for i, g in reversed(list(enumerate(labels)))}
    order = sorted(first, key=lambda g: (-sizes[g], first[g]))
    renumber = np.empty(len(sizes), dtype=int)
    renumber[order] = np.arange(len(order))
    relabelled: np.ndarray = renumber[labels]
    return relabelled


def cluster(points: np.ndarray, max_groups: int, seed: int) -> tuple[np.ndarray, dict[int, float]]:
    """Group labels for ``points`` by k-means with the best-silhouette k in
    2..max_groups, and each k's silhouette; all one group when k = 2 is impossible."""
    from sklearn.cluster import KMeans  # type: ignore[import-untyped]
    from sklearn.metrics import silhouette_score  # type: ignore[import-untyped]

    n = len(points)
    distinct = len(np.unique(points, axis=0))
    silhouettes: dict[int, float] = {}
    best: tuple[float, np.ndarray] | None = None
    for k in range(2, min(max_groups, distinct, n - 1) + 1):
        labels = KMeans(n_clusters=k, n_init=KMEANS_RESTARTS, random_state=seed).fit_predict(points)
        if len(np.unique(labels)) < 2:
            continue
        sample = SILHOUETTE_SAMPLE if n > SILHOUETTE_SAMPLE else None
        score = float(silhouette_score(points, labels, sample_size=sample, random_state=seed))
        silhouettes[k] = score
        if best is None or score > best[0]:
            best = (score, labels)
    if best is None:
        return np.zeros(n, dtype=int), silhouettes
    return _by_size(best[1]), silhouettes


def group_votes(votes: np.ndarray, labels: np.ndarray, k: int) -> list[list[GroupVotes]]:
    """``[statement][group]`` counts and Laplace-smoothed probabilities; ``votes`` holds
    the grouped participants' rows, ``labels`` their groups."""
    table: list[list[GroupVotes]] = [[] for _ in range(votes.shape[1])]
    for g in range(k):
        members = votes[labels == g]
        agree = (members == 1).sum(axis=0)
        disagree = (members == -1).sum(axis=0)
        passed = (members == 0).sum(axis=0)
        for j in range(votes.shape[1]):
            seen = int(agree[j] + disagree[j] + passed[j])
            table[j].append(
                GroupVotes(
                    agree=int(agree[j]),
                    disagree=int(disagree[j]),
                    passed=int(passed[j]),
                    seen=seen,
                    p_agree=(int(agree[j]) + 1) / (seen + 2),
                    p_disagree=(int(disagree[j]) + 1) / (seen + 2),
                )
            )
    return table


def divisiveness(groups: tuple[GroupVotes, ...]) -> float:
    """Half the spread of the groups' net lean ``p_agree - p_disagree`` (module doc)."""
    leans = [g.p_agree - g.p_disagree for g in groups]
    return (max(leans) - min(leans)) / 2 if leans else 0.0


# ----------------------------------------------------------------------------- analysis


def analyse(
    data: PublicInput, *, min_votes: int = 7, max_groups: int = 5, seed: int = 0
) -> Analysis:
    """Opinion groups and each statement's per-group agreement, consensus and
    divisiveness (the steps: module doc). Deterministic for a given ``seed``."""
    if min_votes < 1:
        raise AnalysisError("min_votes must be at least 1")
    if max_groups < 1:
        raise AnalysisError("max_groups must be at least 1")
    votes = data.votes
    n_votes = (~np.isnan(votes)).sum(axis=1)
    grouped = n_votes >= min_votes
    if not grouped.any():
        raise AnalysisError(f"no participant cast at least {min_votes} votes")
    positions, ratios = project(votes, grouped, n_votes, seed)
    labels, silhouettes = cluster(positions[grouped], max_groups, seed)
    k = int(labels.max()) + 1
    group_of = np.full(len(votes), -1)
    group_of[grouped] = labels
    table = group_votes(votes[grouped], labels, k)
    statements = tuple(
        StatementResult(
            id=s.id,
            text=s.text,
            groups=tuple(table[j]),
            consensus=math.prod(g.p_agree for g in table[j]),
            disagree_consensus=math.prod(g.p_disagree for g in table[j]),
            divisiveness=divisiveness(tuple(table[j])),
        )
        for j, s in enumerate(data.statements)
    )
    participants = tuple(
        ParticipantResult(
            id=pid,
            group=int(group_of[i]) if grouped[i] else None,
            x=None if n_votes[i] == 0 else float(positions[i, 0]),
            y=None if n_votes[i] == 0 else float(positions[i, 1]),
            n_votes=int(n_votes[i]),
        )
        for i, pid in enumerate(data.participants)
    )
    members = positions[grouped]
    groups = tuple(
        Group(
            index=g,
            size=int((labels == g).sum()),
            x=float(members[labels == g, 0].mean()),
            y=float(members[labels == g, 1].mean()),
        )
        for g in range(k)
    )
    return Analysis(
        participants=participants,
        statements=statements,
        groups=groups,
        k=k,
        silhouettes=silhouettes,
        explained_variance_ratio=ratios,
        min_votes=min_votes,
    )


# ----------------------------------------------------------------------------- selection


def consensus_ranking(analysis: Analysis) -> list[StatementResult]:
    """Statements by group-informed consensus, highest first (ties keep input order)."""
    return sorted(analysis.statements, key=lambda s: -s.consensus)


def candidates(analysis: Analysis, *, min_group_agreement: float = 0.6) -> list[StatementResult]:
    """Constitution candidates: statements every group agrees with at least
    ``min_group_agreement`` (its ``p_agree``), highest consensus first. The product
    alone could pass a statement that one group is lukewarm about when the others love
    it; the per-group floor cannot."""
    return [
        s
        for s in consensus_ranking(analysis)
        if all(g.p_agree >= min_group_agreement for g in s.groups)
    ]


def divisive(analysis: Analysis, *, threshold: float = 0.5) -> list[StatementResult]:
    """Statements whose divisiveness reaches ``threshold``, most divisive first: the
    ones the public split on, to leave out."""
    return sorted(
        (s for s in analysis.statements if s.divisiveness >= threshold),
        key=lambda s: -s.divisiveness,
    )
