"""How the transformers engine cuts a call into forward passes: a measured cost model.

On a CPU a forward pass costs roughly the same per computed token whatever the
batch shape, so every padding token is paid in full, and batching only saves the
fixed cost of one pass (walking 30 layers, streaming the weights). A pass of
``rows`` x ``width`` new tokens after ``context`` cached tokens is modelled as

    seconds = per_forward
              + rows * width * (per_token + per_key * (width + 1) / 2 + per_cached_key * context)

(the attention terms: each new token reads half of the new keys on average, through
SDPA's causal kernel, and all ``context`` cached ones, through an explicit mask). :func:`plan` sorts the rows by length and splits
them into contiguous buckets by dynamic programming, minimising the summed model
cost subject to ``rows <= max_rows`` and ``rows * width <= max_tokens`` (the token
budget: above it a CPU pass gets slower per token as its activations fall out of
cache, which the linear model does not see). Sorting first is optimal for this cost:
a bucket's cost depends only on its row count and its longest row.

Generation adds ``steps`` decode passes per bucket, each ``rows`` x 1 tokens over a
growing cache, costing ``per_forward + rows * (per_decode_token + per_cached_key *
keys)`` (a decode token also pays the output head and the sampler over the whole
vocabulary, which a scoring row pays once); there ``per_forward`` dominates on small
models, so generation buckets come out much wider than scoring ones, up to a budget
of cached tokens (rows x (prompt + steps)).

Shared-prefix reuse (:func:`reuse_pays`) runs the common prefix once and every row
after it; it pays only when the prefix computed once saves more than the attention
the suffixes still do over it and the extra pass. The constants are fitted by
``bench/engine_cost_model.py``; only their ratios matter for the plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ForwardCost:
    """Seconds of one forward pass (see module doc); fitted per device."""

    per_forward: float
    """Fixed cost of a pass, whatever its shape."""
    per_token: float
    """Cost of each computed token (rows x width, padding included)."""
    per_key: float
    """Cost of each (new token, new key) pair under causal attention."""
    per_cached_key: float
    """Cost of each (new token, cached key) pair: the masked attention over a reused
    prefix or a decode step's cache, and copying that cache per row."""
    per_decode_token: float = 0.0
    """Cost of each row of a decode step besides attention (its layers, the output
    head and the sampler over the vocabulary)."""

    def __post_init__(self) -> None:
        values = (
            self.per_forward, self.per_token, self.per_key, self.per_cached_key,
            self.per_decode_token,
        )  # fmt: skip
        if min(values) < 0 or self.per_token == 0:
            raise ValueError("cost constants must be >= 0 and per_token > 0")

    def forward(self, rows: int, width: int, context: int = 0) -> float:
        per_row_token = (
            self.per_token + self.per_key * (width + 1) / 2 + self.per_cached_key * context
        )
        return self.per_forward + rows * width * per_row_token

    def generation(self, rows: int, width: int, steps: int) -> float:
        """Prefill of ``rows`` x ``width`` then ``steps`` one-token decode passes."""
        cached = width + steps / 2
        per_row = self.per_decode_token or self.per_token
        decode = self.per_forward + rows * (per_row + self.per_cached_key * cached)
        return self.forward(rows, width) + steps * decode


CPU_COST = ForwardCost(
    per_forward=0.062,
    per_token=1.69e-3,
    per_key=1.54e-6,
    per_cached_key=1.83e-6,
    per_decode_token=2.3e-2,
)
"""SmolLM2-135M, float32, one thread of a 2-core x86 CPU; fitted by
``bench/engine_cost_model.py`` (bench/results/engine_cost_model.json: median error 6.5%
over 49 pass shapes; the decode cost from sampled steps, top-p over the vocabulary)."""
CUDA_COST = ForwardCost(
    per_forward=0.02, per_token=2.0e-6, per_key=2.0e-9, per_cached_key=4e-9, per_decode_token=1e-4
)
"""A GPU: a pass costs mostly its fixed launch cost, so buckets grow to the budget.
Not fitted on a GPU yet (none was lent); only the ratios shape the plan."""


@dataclass(frozen=True)
class Plan:
    """Buckets of row indices (each sorted by length) and the model's cost estimate."""

    buckets: list[list[int]]
    seconds: float
    padded_tokens: int


def plan(
    lengths: Sequence[int],
    cost: ForwardCost,
    *,
    max_rows: int,
    max_tokens: int,
    context: int = 0,
    steps: int = 0,
) -> Plan:
    """The cheapest split of the rows into buckets of consecutive sorted lengths.

    ``steps`` > 0 plans generation (prefill plus that many decode steps per bucket),
    and ``max_tokens`` then bounds rows x (width + steps), the cache a bucket holds.
    A single row is always allowed, even when it alone exceeds ``max_tokens``.
    """
    if max_rows < 1 or max_tokens < 1:
        raise ValueError("max_rows and max_tokens must be >= 1")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    n = len(sizes)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        width = sizes[j - 1]
        limit = min(max_rows, max(1, max_tokens // max(width + steps, 1)), j)
        for rows in range(1, limit + 1):
            if steps:
                seconds = cost.generation(rows, width, steps)
            else:
                seconds = cost.forward(rows, width, context)
            total = best[j - rows] + seconds
            if total < best[j]:
                best[j], cut[j] = total, j - rows
    buckets: list[list[int]] = []
    padded = 0
    j = n
    while j > 0:
        i = cut[j]
        buckets.append(order[i:j])
        padded += (j - i) * sizes[j - 1]
        j = i
    buckets.reverse()
    return Plan(buckets=buckets, seconds=best[n], padded_tokens=padded)


def reuse_pays(
    lengths: Sequence[int],
    shared: int,
    cost: ForwardCost,
    *,
    max_rows: int,
    max_tokens: int,
) -> tuple[bool, Plan, Plan]:
    """Whether computing the ``shared`` prefix once beats computing it in every row.

    Returns the decision and both plans: without reuse over the full lengths, and
    with reuse over the suffixes after ``shared`` (cached context), plus one pass
    over the prefix itself.
    """
    full = plan(lengths, cost, max_rows=max_rows, max_tokens=max_tokens)
    suffixes = [length - shared for length in lengths]
    reused = plan(suffixes, cost, max_rows=max_rows, max_tokens=max_tokens, context=shared)
    with_prefix = Plan(
        reused.buckets, reused.seconds + cost.forward(1, shared), reused.padded_tokens + shared
    )
    return with_prefix.seconds < full.seconds, full, with_prefix
