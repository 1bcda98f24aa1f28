"""The engine's bucket planner: a partition of the rows, optimal under its cost model."""

from __future__ import annotations

import itertools
import random

import pytest

from workers.engines.batch_plan import CPU_COST, ForwardCost, plan, reuse_pays

COST = ForwardCost(per_forward=0.05, per_token=2e-3, per_key=1e-6, per_cached_key=2e-6)


def _brute_force(lengths: list[int], cost: ForwardCost, max_rows: int, max_tokens: int) -> float:
    sizes = sorted(lengths)
    n = len(sizes)
    best = float("inf")
    for cuts in itertools.product([False, True], repeat=n - 1):
        total, start = 0.0, 0
        for j in range(1, n + 1):
            if j == n or cuts[j - 1]:
                rows, width = j - start, sizes[j - 1]
                if rows > 1 and (rows > max_rows or rows * width > max_tokens):
                    total = float("inf")
                    break
                total += cost.forward(rows, width)
                start = j
        best = min(best, total)
    return best


def test_plan_is_a_partition_of_sorted_runs_within_the_limits() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(100, 900) for _ in range(80)]
    result = plan(lengths, COST, max_rows=16, max_tokens=2048)
    flat = [i for bucket in result.buckets for i in bucket]
    assert sorted(flat) == list(range(80))
    assert [lengths[i] for i in flat] == sorted(lengths)
    for bucket in result.buckets:
        width = max(lengths[i] for i in bucket)
        assert len(bucket) <= 16 and (len(bucket) == 1 or len(bucket) * width <= 2048)
    assert result.padded_tokens == sum(len(b) * max(lengths[i] for i in b) for b in result.buckets)


@pytest.mark.parametrize("seed", range(6))
def test_plan_is_optimal_under_its_cost_model(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(20, 700) for _ in range(10)]
    result = plan(lengths, COST, max_rows=4, max_tokens=1500)
    assert result.seconds == pytest.approx(_brute_force(lengths, COST, 4, 1500))


def test_a_row_longer_than_the_budget_runs_alone() -> None:
    result = plan([5000, 10, 10], COST, max_rows=8, max_tokens=1024)
    assert result.buckets == [[1, 2], [0]]


def test_padding_is_avoided_when_passes_are_cheap_and_paid_when_not() -> None:
    lengths = [100, 100, 400, 400]
    free_passes = ForwardCost(per_forward=0.0, per_token=1e-3, per_key=0.0, per_cached_key=0.0)
    costly_passes = ForwardCost(per_forward=10.0, per_token=1e-3, per_key=0.0, per_cached_key=0.0)
    assert plan(lengths, free_passes, max_rows=8, max_tokens=10_000).padded_tokens == 1000
    assert plan(lengths, costly_passes, max_rows=8, max_tokens=10_000).buckets == [[0, 1, 2, 3]]


def test_generation_buckets_are_wider_than_scoring_ones() -> None:
    # A decode step costs mostly its fixed cost: rows of different lengths share a bucket.
    lengths = [150, 200, 300, 450, 600]
    scoring = plan(lengths, CPU_COST, max_rows=64, max_tokens=4096)
    generation = plan(lengths, CPU_COST, max_rows=64, max_tokens=4096, steps=192)
    assert len(generation.buckets) < len(scoring.buckets)


def test_prefix_reuse_pays_for_long_shared_prefixes_only() -> None:
    # Few-shot prompts: a 461-token preamble before ~130-token questions.
    few_shot = [590 + k for k in range(16)]
    pays, full, reused = reuse_pays(few_shot, 461, COST, max_rows=16, max_tokens=4096)
    assert pays and reused.seconds < 0.6 * full.seconds
    # No few-shot: a 45-token prefix of 150-900-token prompts.
    rng = random.Random(1)
    plain = [rng.randint(150, 900) for _ in range(32)]
    attention_heavy = ForwardCost(
        per_forward=0.05, per_token=2e-3, per_key=1e-6, per_cached_key=1e-5
    )
    pays, full, reused = reuse_pays(plain, 45, attention_heavy, max_rows=16, max_tokens=2048)
    assert not pays and reused.seconds >= full.seconds


def test_cost_constants_are_validated() -> None:
    with pytest.raises(ValueError):
        ForwardCost(per_forward=-1.0, per_token=1e-3, per_key=0.0, per_cached_key=0.0)
    with pytest.raises(ValueError):
        plan([1, 2], COST, max_rows=0, max_tokens=10)
