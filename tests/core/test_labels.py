import math

import pytest

from charter.core.engine import ChoiceLogprobs
from charter.core.labels import chosen_rejected, clamp, combine, preference


def lp(pa: float, pb: float) -> ChoiceLogprobs:
    return ChoiceLogprobs(a=math.log(pa) if pa else -math.inf, b=math.log(pb) if pb else -math.inf)


def test_preference_renormalises_over_the_two_letters():
    assert preference(lp(0.6, 0.2)) == pytest.approx(0.75)
    assert preference(ChoiceLogprobs(a=-1.0, b=-1.0)) == pytest.approx(0.5)
    # p_A = e^lA / (e^lA + e^lB), exactly
    a, b = -0.3, -2.1
    assert preference(ChoiceLogprobs(a, b)) == pytest.approx(
        math.exp(a) / (math.exp(a) + math.exp(b))
    )


def test_preference_is_stable_for_very_negative_logprobs():
    assert preference(ChoiceLogprobs(a=-1000.0, b=-1001.0)) == pytest.approx(1 / (1 + math.exp(-1)))
    assert preference(ChoiceLogprobs(a=-math.inf, b=-3.0)) == 0.0


def test_clamp_band():
    assert clamp(0.9, (0.4, 0.6)) == 0.6
    assert clamp(0.1, (0.4, 0.6)) == 0.4
    assert clamp(0.55, (0.4, 0.6)) == 0.55


def test_single_order_label():
    v = combine(lp(0.7, 0.2), min_mass=0.5)
    assert v.p_a == pytest.approx(0.7 / 0.9)
    assert v.p_a_swapped is None and v.disagreement is None
    assert v.mass == pytest.approx(0.9)
    assert v.abstain_reason is None


def test_swap_averages_both_orders_mapped_back_to_original_a():
    # forward: A first gets 0.8 of the renormalised mass; swapped: original A is shown
    # second and gets 0.6 (the swapped prompt's letter B).
    v = combine(lp(0.8, 0.2), lp(0.4, 0.6), min_mass=0.5)
    assert v.p_a_forward == pytest.approx(0.8)
    assert v.p_a_swapped == pytest.approx(0.6)
    assert v.p_a == pytest.approx(0.7)
    assert v.disagreement is False


def test_pure_position_bias_cancels_and_is_flagged():
    # A judge that always prefers whichever response comes first.
    v = combine(lp(0.9, 0.1), lp(0.9, 0.1), min_mass=0.5)
    assert v.p_a == pytest.approx(0.5)
    assert v.disagreement is True


def test_cot_label_is_clamped_after_averaging():
    v = combine(lp(0.95, 0.05), lp(0.05, 0.95), min_mass=0.5, band=(0.4, 0.6))
    assert v.p_a == 0.6
    assert v.p_a_forward == pytest.approx(0.95)  # raw values are kept for provenance
    low = combine(lp(0.01, 0.99), band=(0.4, 0.6))
    assert low.p_a == 0.4


def test_fails_closed_below_mass_threshold():
    v = combine(lp(0.2, 0.1), min_mass=0.5)
    assert v.p_a is None
    assert "mass" in v.abstain_reason
    # one weak order is enough to abstain
    v = combine(lp(0.6, 0.3), lp(0.1, 0.1), min_mass=0.5)
    assert v.p_a is None and v.mass == pytest.approx(0.2)


def test_fails_closed_when_unreadable():
    for bad in (
        ChoiceLogprobs(-math.inf, -math.inf),
        ChoiceLogprobs(math.nan, -1.0),
        ChoiceLogprobs(0.5, -1.0),
    ):
        v = combine(bad, min_mass=0.0)
        assert v.p_a is None and "unreadable" in v.abstain_reason


def test_mass_threshold_zero_accepts_tiny_mass():
    assert combine(lp(0.001, 0.002), min_mass=0.0).p_a == pytest.approx(1 / 3)


def test_chosen_rejected():
    assert chosen_rejected(0.7) == ("a", 0.7)
    side, p = chosen_rejected(0.2)
    assert side == "b" and p == pytest.approx(0.8)
