"""The pairs batch of a policy evaluation, and its labels as Elo comparisons."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from charter.core import elo
from charter.core import policy_eval_plans as plans


def test_slots_pair_every_two_policies_that_answered_a_prompt_alternating_sides() -> None:
    answered = {0: {0, 1, 2}, 1: {0, 1, 2}, 2: {0, 2}}  # policy 1 has no answer to prompt 2
    got = plans.slots(answered, 3)
    assert got == [
        plans.Slot(0, 0, 1),
        plans.Slot(0, 2, 0),
        plans.Slot(0, 1, 2),
        plans.Slot(1, 1, 0),
        plans.Slot(1, 0, 2),
        plans.Slot(1, 2, 1),
        plans.Slot(2, 2, 0),
    ]
    # Over the full prompts, each policy is shown first as often as second.
    full = [s for s in got if s.prompt < 2]
    for policy in range(3):
        assert sum(s.a == policy for s in full) == sum(s.b == policy for s in full)


def test_a_prompt_answered_by_one_policy_gives_no_row() -> None:
    assert plans.slots({0: {1}, 1: set()}, 2) == []


def test_labels_become_comparisons_grouped_by_prompt_and_fit_the_expected_order() -> None:
    policies = ["base", "sft", "rl"]
    strength = {"base": 0.0, "sft": 1.0, "rl": 2.0}
    slot_rows = plans.slots({i: {0, 1, 2} for i in range(40)}, 3)
    p_a = {
        p: 1 / (1 + pow(2.718281828, -(strength[policies[s.a]] - strength[policies[s.b]])))
        for p, s in enumerate(slot_rows)
    }
    found = plans.comparisons(slot_rows, policies, p_a)
    assert len(found) == 120 and {c.group for c in found} == {str(i) for i in range(40)}
    scores = elo.fit(found, anchor="base")
    assert scores["base"] == 0
    assert scores["sft"] == pytest.approx(elo.ELO_PER_LOGIT, rel=0.02)
    assert scores["rl"] == pytest.approx(2 * elo.ELO_PER_LOGIT, rel=0.02)
    rows = {(h.a, h.b): h for h in plans.head_to_head(found, policies)}
    assert rows[("base", "rl")].comparisons == 40
    assert rows[("base", "rl")].a_preferred == pytest.approx(1 / (1 + 2.718281828**2))


def test_unscored_rows_are_left_out_and_a_pair_never_compared_has_no_share() -> None:
    slot_rows = [plans.Slot(0, 0, 1), plans.Slot(0, 1, 2)]
    found = plans.comparisons(slot_rows, ["a", "b", "c"], {1: 0.25})
    assert found == [elo.Comparison("b", "c", 0.25, "0")]
    shares = plans.head_to_head(found, ["a", "b", "c"])
    assert [(h.a, h.b, h.comparisons, h.a_preferred) for h in shares] == [
        ("a", "b", 0, None),
        ("a", "c", 0, None),
        ("b", "c", 1, 0.25),
    ]


def test_the_plot_is_helpfulness_against_harmlessness_unless_asked() -> None:
    assert plans.plot_axes(["harmlessness", "helpfulness"], None) == (
        "helpfulness",
        "harmlessness",
    )
    assert plans.plot_axes(["x", "y", "z"], None) == ("x", "y")
    assert plans.plot_axes(["x", "y"], ("y", "x")) == ("y", "x")
    assert plans.plot_axes(["only"], None) is None


def test_a_policy_and_a_judge_need_names_and_check_their_fields() -> None:
    with pytest.raises(ValidationError, match="name"):
        plans.PolicySpec(model="m")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="system_prompt"):
        plans.PolicySpec(name="p", model="m", system_prompt="shout")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="name"):
        plans.JudgeSpec(constitution="default")  # type: ignore[call-arg]
    told = plans.PolicySpec(name="told", model="run:" + "a" * 32, system_prompt="constitution")
    assert told.job_params().system_prompt == "constitution"
    assert plans.repeated(["a", "b", "a", "c", "b"]) == ["a", "b"]
