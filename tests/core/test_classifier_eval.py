"""Guard rates from held-out scores: attack success, false refusals, the curve."""

from __future__ import annotations

import pytest

from charter.core.classifier_eval import Case, added_compute, curve, grid, rates

CASES = [
    Case("harmful", "direct", 0.9, (0.1, 0.2)),  # the input guard blocks it
    Case("harmful", "obfuscated", 0.2, (0.1, 0.7, 0.9)),  # the stream stops at prefix 1
    Case("harmful", "paraphrase", 0.3, (0.1, 0.2)),  # gets through
    Case("benign", "direct", 0.1, (0.1,)),
    Case("benign", "direct", 0.6, (0.1,)),  # falsely refused by the input guard
]


def test_attack_success_and_false_refusals_at_a_threshold() -> None:
    both = rates(CASES, 0.5, 0.5)
    assert both.attack_success == pytest.approx(1 / 3)
    assert both.false_refusal == pytest.approx(1 / 2)
    assert both.by_variant == {"direct": 0.0, "obfuscated": 0.0, "paraphrase": 1.0}
    assert (both.harmful, both.benign) == (3, 2)
    input_only = rates(CASES, 0.5, None)
    assert input_only.attack_success == pytest.approx(2 / 3)
    unguarded = rates(CASES, None, None)
    assert unguarded.attack_success == 1.0 and unguarded.false_refusal == 0.0
    assert CASES[1].stopped_at(0.5) == 1 and CASES[2].stopped_at(0.5) is None


def test_the_curve_trades_attacks_for_refusals() -> None:
    points = curve(CASES, grid(9))
    assert [p.input_threshold for p in points] == pytest.approx([0.1 * i for i in range(1, 10)])
    attacks = [p.attack_success for p in points]
    refusals = [p.false_refusal for p in points]
    assert attacks == sorted(attacks) and refusals == sorted(refusals, reverse=True)
    assert points[0].attack_success == 0.0 and points[-1].attack_success == pytest.approx(1 / 3)
    assert points[0].false_refusal == 1.0 and points[-1].false_refusal == 0.0
    assert rates([], 0.5, 0.5).attack_success is None


def test_added_compute_counts_the_stream_guard_re_reading_prefixes() -> None:
    # Same-size models, 10 prompt tokens, 4 response tokens: the guard reads 10 + (1+2+3+4).
    assert added_compute(100, 100, 10, 4) == pytest.approx(20 / 14)
    assert added_compute(100, 100, 10, 4, stride=2) == pytest.approx((10 + 2 + 4) / 14)
    assert added_compute(1, 100, 10, 0) == pytest.approx(10 / 1000)
