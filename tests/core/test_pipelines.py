"""The job-type dispatch of the pipelines and the job-type tables: each type runs its
own procedure, and a type no case handles raises instead of running RL-CAI."""

from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import yaml

from charter.core import pipelines, prompts
from charter.core.constitution import Constitution
from charter.core.export import DEFAULT_LABEL_KINDS, LABEL_KINDS, PREFERENCE_KINDS, SFT_KINDS
from charter.core.jobs import (
    JobParams,
    JobType,
    dataset_kind,
    in_default_datasets,
    job_input,
    principle_kind,
)
from workers.engines.scripted import ScriptedEngine

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = Constitution.model_validate(
    yaml.safe_load((ROOT / "constitutions" / "default.yaml").read_text())
)
BOGUS = cast(JobType, "bogus")


def _items() -> list[pipelines.Item]:
    conversation = [{"role": "user", "content": "How do I boil an egg?"}]
    return [
        pipelines.Item(
            item_id=i,
            prompt_id=i,
            position=i,
            attempt=1,
            conversation=conversation,
            response="Boil it.",
            response_a="Boil it for 8 minutes.",
            response_b="Fry it.",
        )
        for i in range(2)
    ]


def _run(job_type: JobType, **params: object) -> tuple[list[pipelines.Outcome], ScriptedEngine]:
    engine = ScriptedEngine()
    ctx = pipelines.Context(engine, DEFAULT, JobParams.model_validate(params), 7, pipelines.Timer())
    return pipelines.run(ctx, job_type, _items(), 0), engine


@pytest.mark.parametrize("job_type", [JobType.RL_CAI, JobType.COMPARE])
def test_preference_types_run_rl_cai(job_type: JobType) -> None:
    outcomes, engine = _run(job_type)
    assert [o.fields["response_a"] for o in outcomes] == ["Boil it for 8 minutes."] * 2
    assert all(o.fields["p_a"] is not None for o in outcomes)
    assert engine.calls == [("choice_logprobs", 4)]  # both orders of both pairs, one call


def test_sl_cai_runs_its_rounds() -> None:
    outcomes, engine = _run(JobType.SL_CAI, rounds=2)
    assert [len(o.fields["rounds"]) for o in outcomes] == [2, 2]
    assert all(o.fields["rounds"][-1]["revision"] == o.fields["completion"] for o in outcomes)
    assert ("choice_logprobs", 4) not in engine.calls
    assert engine.calls == [("generate", 2)] * 4  # critique, revision, twice


def test_revise_runs_one_round_whatever_the_params() -> None:
    outcomes, _ = _run(JobType.REVISE, rounds=3)
    assert [len(o.fields["rounds"]) for o in outcomes] == [1, 1]
    assert all(o.fields["rounds"][0]["revision"] is not None for o in outcomes)
    assert all(o.fields["response"] == "Boil it." for o in outcomes)


def test_critique_does_not_revise() -> None:
    outcomes, engine = _run(JobType.CRITIQUE)
    rounds = [o.fields["rounds"] for o in outcomes]
    assert all(r[0]["revision"] is None for r in rounds)
    assert [o.fields["completion"] for o in outcomes] == [r[0]["critique"] for r in rounds]
    assert engine.calls == [("generate", 2)]


@pytest.mark.parametrize("system_prompt", ["default", "constitution"])
def test_generate_answers_each_prompt_once_with_its_system_prompt(system_prompt: str) -> None:
    seen: list[list[dict[str, str]]] = []

    def answer(conversation: list[dict[str, str]], _: object) -> str:
        seen.append(list(conversation))
        return f"answer {len(seen)}"

    engine = ScriptedEngine(responses=answer)
    params = JobParams(system_prompt=system_prompt)  # type: ignore[arg-type]
    ctx = pipelines.Context(engine, DEFAULT, params, 7, pipelines.Timer())
    outcomes = pipelines.run(ctx, JobType.GENERATE, _items(), 0)
    assert [o.fields for o in outcomes] == [{"completion": "answer 1"}, {"completion": "answer 2"}]
    assert engine.calls == [("generate", 2)]  # the supplied responses are not used
    system = [c[0] for c in seen]
    assert all(m["role"] == "system" for m in system)
    assert [c[1:] for c in seen] == [_items()[0].conversation] * 2
    told = [DEFAULT.description, *(p.text for p in DEFAULT.comparison_principles)]
    if system_prompt == "constitution":
        assert all(t in m["content"] for m in system for t in told)
    else:
        assert all(m["content"] == prompts.SYSTEM for m in system)
    again = pipelines.run(ctx, JobType.GENERATE, _items(), 0)
    assert [o.fields for o in again] == [{"completion": "answer 3"}, {"completion": "answer 4"}]


def test_generate_samples_with_the_seed_of_its_job_and_chunk() -> None:
    def texts(seed: int, chunk: object) -> list[str]:
        ctx = pipelines.Context(ScriptedEngine(), DEFAULT, JobParams(), seed, pipelines.Timer())
        return [
            o.fields["completion"] for o in pipelines.run(ctx, JobType.GENERATE, _items(), chunk)
        ]

    assert texts(7, 0) == texts(7, 0)
    assert texts(7, 0) != texts(8, 0) and texts(7, 0) != texts(7, 1)


def test_a_constitution_without_comparisons_guides_with_its_revision_requests() -> None:
    critique_only = DEFAULT.model_copy(update={"comparison_principles": ()})
    system = prompts.constitution_system(critique_only)
    assert all(p.revision in system for p in DEFAULT.critique_principles)
    assert not any(p.text in system for p in DEFAULT.comparison_principles)


def test_unknown_job_type_raises_instead_of_running_rl_cai() -> None:
    engine = ScriptedEngine()
    ctx = pipelines.Context(engine, DEFAULT, JobParams(), 7, pipelines.Timer())
    with pytest.raises(AssertionError, match="bogus"):
        pipelines.run(ctx, BOGUS, _items(), 0)
    assert engine.calls == []


@pytest.mark.parametrize("table", [dataset_kind, job_input, principle_kind, in_default_datasets])
def test_job_type_tables_cover_every_type_and_reject_others(
    table: Callable[[JobType], str | bool],
) -> None:
    assert all(isinstance(table(t), str | bool) for t in JobType)  # none falls through
    with pytest.raises(AssertionError, match="bogus"):
        table(BOGUS)


def test_label_kinds_partition_the_job_types() -> None:
    assert sorted(SFT_KINDS + PREFERENCE_KINDS) == sorted(t.value for t in JobType)
    assert LABEL_KINDS == {
        "sft": ("sl_cai", "critique", "revise", "generate"),
        "preference": ("rl_cai", "compare"),
    }
    # A policy's generations are evaluated, not trained on, unless a filter asks for them.
    assert DEFAULT_LABEL_KINDS == {
        "sft": ("sl_cai", "critique", "revise"),
        "preference": ("rl_cai", "compare"),
    }
