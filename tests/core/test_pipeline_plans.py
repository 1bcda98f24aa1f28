"""The pipeline's stage graph: what each stage needs, what a re-run supersedes, what runs next."""

from __future__ import annotations

import pytest

from charter.core.pipeline_plans import StageStatus as S
from charter.core.pipeline_plans import downstream, finished, runnable, stages


def test_the_recipe_in_order_with_the_rl_stages_asked_for() -> None:
    graph = stages(["dpo", "ppo"])
    assert [(s.name, s.kind, s.needs) for s in graph] == [
        ("sl_cai", "job", ()),
        ("sft_data", "dataset", ("sl_cai",)),
        ("sft", "run", ("sft_data",)),
        ("rl_cai", "job", ("sft",)),
        ("pref_data", "dataset", ("rl_cai",)),
        ("pm", "run", ("pref_data",)),
        ("ppo", "run", ("sft", "pref_data", "pm")),
        ("dpo", "run", ("sft", "pref_data")),
        ("elo", "policy_eval", ("sft", "ppo", "dpo")),
    ]
    every = [s.name for s in stages(["ppo", "dpo", "rloo", "grpo"])]
    assert every[6:] == ["ppo", "dpo", "rloo", "grpo", "elo"]
    for bad in ([], ["sft"], ["ppo", "a2c"]):
        with pytest.raises(ValueError, match="one or more of ppo, dpo, rloo, grpo"):
            stages(bad)


def test_a_rerun_supersedes_what_reads_the_stage_and_nothing_else() -> None:
    graph = stages(["ppo", "dpo"])
    assert downstream(graph, "pm") == ["pm", "ppo", "elo"]  # dpo never read the PM
    assert downstream(graph, "pref_data") == ["pref_data", "pm", "ppo", "dpo", "elo"]
    assert downstream(graph, "sl_cai") == [s.name for s in graph]
    assert downstream(graph, "elo") == ["elo"]
    with pytest.raises(ValueError, match="no stage 'rloo'"):
        downstream(graph, "rloo")


def test_what_runs_next() -> None:
    graph = stages(["ppo", "dpo"])
    assert runnable(graph, {}) == ["sl_cai"]
    assert runnable(graph, {"sl_cai": S.SUBMITTED}) == []
    done = {n: S.COMPLETED for n in ("sl_cai", "sft_data", "sft", "rl_cai", "pref_data")}
    assert runnable(graph, done) == ["pm", "dpo"]  # dpo does not wait for the PM
    assert runnable(graph, done | {"pm": S.COMPLETED, "dpo": S.SUBMITTED}) == ["ppo"]
    for retried in (S.FAILED, S.CANCELLED, S.SUPERSEDED):
        assert runnable(graph, done | {"pm": retried, "dpo": S.COMPLETED}) == ["pm"]
    everything = {s.name: S.COMPLETED for s in graph}
    assert runnable(graph, everything) == [] and finished(graph, everything)
    assert not finished(graph, everything | {"elo": S.SUBMITTED})
    # a superseded stage's dependants wait for its new attempt, not its old output
    assert runnable(graph, everything | {"sft": S.SUPERSEDED, "rl_cai": S.SUPERSEDED}) == ["sft"]
