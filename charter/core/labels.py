"""Label math for RL-CAI feedback: log-probs of A/B -> a soft preference label.

p_A = e^lA / (e^lA + e^lB), computed stably. With position-swap debiasing the
pair is also scored in the other order, mapped back to "original A preferred",
and the two are averaged; opposite winners are flagged. Chain-of-thought labels
are clamped into a band (paper §4.1: 0.40-0.60) because they are over-confident.
The label fails closed: too little mass on A and B, or an unreadable position,
gives no label and a reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from charter.core.engine import ChoiceLogprobs


@dataclass(frozen=True)
class Verdict:
    p_a: float | None
    """Final probability that response A is preferred; None when abstaining."""
    p_a_forward: float | None
    """P(A) with A shown first."""
    p_a_swapped: float | None
    """P(A) with A shown second (read as P(second)), None without swap."""
    disagreement: bool | None
    """The two orders picked different winners."""
    mass: float
    """Smallest probability mass A+B carried across the orders scored."""
    abstain_reason: str | None = None


def preference(logprobs: ChoiceLogprobs) -> float:
    """P(first letter) renormalised over the two letters, stable for very negative log-probs."""
    return 1.0 / (1.0 + math.exp(logprobs.b - logprobs.a))


def clamp(p: float, band: tuple[float, float]) -> float:
    low, high = band
    return min(max(p, low), high)


def _readable(logprobs: ChoiceLogprobs) -> bool:
    values = (logprobs.a, logprobs.b)
    return not any(math.isnan(v) or v > 1e-6 for v in values) and max(values) > -math.inf


def combine(
    forward: ChoiceLogprobs,
    swapped: ChoiceLogprobs | None = None,
    *,
    min_mass: float = 0.5,
    band: tuple[float, float] | None = None,
) -> Verdict:
    """The soft label from one or both orders.

    ``forward`` scores (A, B) as shown; ``swapped`` scores (B, A), i.e. its letter
    ``A`` names the original B. ``band`` clamps the final label (chain of thought).
    """
    orders = [forward] if swapped is None else [forward, swapped]
    if not all(_readable(o) for o in orders):
        return Verdict(
            None, None, None, None, 0.0, "answer position unreadable (no finite A/B log-probs)"
        )
    mass = min(o.mass for o in orders)
    p_forward = preference(forward)
    p_swapped = None if swapped is None else 1.0 - preference(swapped)
    disagreement = None if p_swapped is None else (p_forward - 0.5) * (p_swapped - 0.5) < 0
    if mass < min_mass:
        reason = f"A/B probability mass {mass:.3f} below threshold {min_mass:.3f}"
        return Verdict(None, p_forward, p_swapped, disagreement, mass, reason)
    p = p_forward if p_swapped is None else (p_forward + p_swapped) / 2.0
    if band is not None:
        p = clamp(p, band)
    return Verdict(p, p_forward, p_swapped, disagreement, mass)


def chosen_rejected(p_a: float) -> tuple[str, float]:
    """Which response is chosen (``"a"`` or ``"b"``) and the soft label P(chosen preferred)."""
    return ("a", p_a) if p_a >= 0.5 else ("b", 1.0 - p_a)
