"""Which labels a review queue shows: a seeded sample, plain or stratified.

Pure: candidates in, picks out, the same picks for the same candidates and seed
(candidates are ordered by label id first, so the order they arrive in does not
matter).

- ``random``: a uniform sample of ``size`` labels.
- ``stratified``: strata by ``principle`` (the label's principle ids), ``confidence``
  (bins of |P(A) - 0.5|, comparisons only) or ``swap_disagreement`` (whether the
  forward and swapped orders picked different winners; swapped comparisons only).
  Each stratum gets its share of ``size`` in proportion to its size (largest
  remainders), and at least one label whenever ``size`` is at least the number of
  strata; within a stratum the labels are a uniform sample.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

Strategy = Literal["random", "stratified"]
StratifyBy = Literal["principle", "confidence", "swap_disagreement"]

CONFIDENCE_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
"""Bins of |P(A) - 0.5|: [0, 0.1), [0.1, 0.2), ..., [0.4, 0.5]."""


@dataclass(frozen=True)
class Candidate:
    label_id: int
    principle_ids: tuple[str, ...]
    p_a: float | None = None
    swap_disagreement: bool | None = None


@dataclass(frozen=True)
class Pick:
    label_id: int
    stratum: str | None


def confidence_bin(p_a: float) -> str:
    """The |P(A) - 0.5| bin of a soft label, e.g. ``"0.1-0.2"``."""
    margin = abs(p_a - 0.5)
    for low, high in pairwise(CONFIDENCE_EDGES):
        if margin < high or high == CONFIDENCE_EDGES[-1]:
            return f"{low:.1f}-{high:.1f}"
    raise AssertionError("unreachable: the last bin is closed")


def stratum_of(candidate: Candidate, by: StratifyBy) -> str | None:
    """The candidate's stratum, or None when it has none under ``by`` (then it is left out)."""
    if by == "principle":
        return "+".join(candidate.principle_ids) or "(none)"
    if by == "confidence":
        return None if candidate.p_a is None else confidence_bin(candidate.p_a)
    if by == "swap_disagreement":
        if candidate.swap_disagreement is None:
            return None
        return "disagree" if candidate.swap_disagreement else "agree"
    raise ValueError(f"unknown stratification {by!r}")


def allocate(sizes: dict[str, int], size: int) -> dict[str, int]:
    """How many labels each stratum gets: proportional (largest remainders, ties by
    stratum name), at least one each when ``size`` allows, never more than it has."""
    total = sum(sizes.values())
    size = min(size, total)
    if total == 0 or size == 0:
        return dict.fromkeys(sizes, 0)
    quotas = {s: size * n / total for s, n in sizes.items()}
    counts = {s: math.floor(q) for s, q in quotas.items()}
    left = size - sum(counts.values())
    by_remainder = sorted(sizes, key=lambda s: (-(quotas[s] - counts[s]), s))
    for s in by_remainder:
        if left == 0:
            break
        if counts[s] < sizes[s]:
            counts[s] += 1
            left -= 1
    nonempty = [s for s in sorted(sizes) if sizes[s] > 0]
    if size >= len(nonempty):
        for s in nonempty:
            if counts[s] == 0:
                donor = max(sorted(counts), key=lambda d: counts[d])
                counts[donor] -= 1
                counts[s] = 1
    return counts


def sample(
    candidates: Iterable[Candidate],
    size: int,
    strategy: Strategy,
    by: StratifyBy | None = None,
    seed: int = 0,
) -> list[Pick]:
    """The queue's labels in queue order (by label id within the sample).

    ``by`` is required for ``stratified``; for ``random`` it only restricts the
    candidates to those with a stratum (e.g. swapped comparisons).
    """
    if size < 1:
        raise ValueError("size must be at least 1")
    pool = sorted(candidates, key=lambda c: c.label_id)
    rng = random.Random(seed)
    strata: dict[str, list[Candidate]] = {}
    for candidate in pool:
        key = "" if by is None else stratum_of(candidate, by)
        if key is not None:
            strata.setdefault(key, []).append(candidate)
    if strategy == "random":
        kept = [c for key in sorted(strata) for c in strata[key]]
        kept.sort(key=lambda c: c.label_id)
        chosen = rng.sample(kept, min(size, len(kept)))
        return sorted(
            (Pick(c.label_id, None if by is None else stratum_of(c, by)) for c in chosen),
            key=lambda p: p.label_id,
        )
    if strategy == "stratified":
        if by is None:
            raise ValueError("a stratified sample needs 'by'")
        counts = allocate({k: len(v) for k, v in strata.items()}, size)
        picks = [
            Pick(c.label_id, key)
            for key in sorted(strata)
            for c in rng.sample(strata[key], counts[key])
        ]
        return sorted(picks, key=lambda p: p.label_id)
    raise ValueError(f"unknown strategy {strategy!r}")
