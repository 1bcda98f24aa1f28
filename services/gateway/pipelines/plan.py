"""Each stage's request body, from the pipeline's stored spec and the outputs of the
stages it needs. Pure: the same spec and outputs always give the same body, which the
stage's attempt records as its ``inputs``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from charter.core.jobs import RUN_MODEL_PREFIX, JobType
from charter.core.pipeline_plans import REWARDED
from charter.core.policy_eval_plans import JudgeSpec, PolicySpec
from charter.core.prompts import derive_seed
from services.gateway.pipelines.schemas import PipelineCreate

BASE, PROMPTED, SFT = "base", "base-prompted", "sft"
"""The Elo evaluation's names for the base model, the base model told the constitution,
and the SFT model; each RL policy is named by its stage (ppo, dpo, rloo, grpo)."""


def _seed(spec: PipelineCreate, stage: str) -> int:
    assert spec.seed is not None  # pinned at submission
    return derive_seed(spec.seed, "pipeline", stage) % 2**62


def _model(run_id: str) -> str:
    return f"{RUN_MODEL_PREFIX}{run_id}"


def dataset_name(pipeline_id: str, stage: str) -> str:
    return f"pipeline-{pipeline_id}-{'sft' if stage == 'sft_data' else 'preference'}"


def judges(spec: PipelineCreate) -> list[JudgeSpec]:
    return spec.elo.judges or [
        JudgeSpec(name="harmlessness", model=spec.base_model, constitution=spec.constitution)
    ]


def body(
    spec: PipelineCreate, pipeline_id: str, stage: str, out: Mapping[str, str]
) -> dict[str, Any]:
    """The body of ``stage``'s request (``out``: stage -> output of every stage it needs)."""
    common = {"constitution": spec.constitution, "chunk_size": spec.chunk_size}
    match stage:
        case "sl_cai":
            return common | {
                "type": JobType.SL_CAI.value,
                "batch_id": spec.prompts,
                "model": spec.base_model,
                "params": spec.sl_cai.params.model_dump(mode="json"),
                "seed": _seed(spec, stage),
            }
        case "rl_cai":
            return common | {
                "type": JobType.RL_CAI.value,
                "batch_id": spec.rl_prompts or spec.prompts,
                "model": _model(out["sft"]),
                "params": spec.rl_cai.params.model_dump(mode="json"),
                "seed": _seed(spec, stage),
            }
        case "sft_data":
            mix = spec.sft_data.mix
            return {
                "name": dataset_name(pipeline_id, stage),
                "kind": "sft",
                "filter": {"job_ids": [out["sl_cai"]]},
                "mix": None if mix is None else mix.model_dump(mode="json"),
            }
        case "pref_data":
            return {
                "name": dataset_name(pipeline_id, stage),
                "kind": "preference",
                "filter": {"job_ids": [out["rl_cai"]]}
                | spec.pref_data.model_dump(mode="json", exclude_defaults=True),
            }
        case "sft" | "pm":
            return {
                "type": stage,
                "dataset": out[f"{stage}_data" if stage == "sft" else "pref_data"],
                "base_model": spec.base_model,
                "config": getattr(spec, stage).config.as_dict(),
            }
        case "ppo" | "dpo" | "rloo" | "grpo":
            run = {
                "type": stage,
                "dataset": out["pref_data"],
                "base_model": _model(out["sft"]),  # RL starts from, and is held to, SL-CAI
                "config": getattr(spec, stage).config.as_dict(),
            }
            return run | ({"reward_run": out["pm"]} if stage in REWARDED else {})
        case "elo":
            sampling = spec.elo.sampling
            policies = [PolicySpec(name=BASE, model=spec.base_model, sampling=sampling)]
            if spec.elo.baseline:
                policies.append(
                    PolicySpec(
                        name=PROMPTED,
                        model=spec.base_model,
                        system_prompt="constitution",
                        constitution=spec.constitution,
                        sampling=sampling,
                    )
                )
            policies.append(PolicySpec(name=SFT, model=_model(out["sft"]), sampling=sampling))
            policies += [
                PolicySpec(name=name, model=_model(out[name]), sampling=sampling)
                for name in spec.rl()
            ]
            return {
                "name": f"{spec.name or 'pipeline'} {pipeline_id[:8]}"[:128],
                "batch_id": spec.eval_prompts or spec.rl_prompts or spec.prompts,
                "policies": [p.model_dump(mode="json") for p in policies],
                "judges": [j.model_dump(mode="json") for j in judges(spec)],
                "anchor": BASE,
                "plot": None if spec.elo.plot is None else list(spec.elo.plot),
                "bootstrap": spec.elo.bootstrap,
                "seed": _seed(spec, stage),
                "chunk_size": spec.chunk_size,
            }
    raise ValueError(f"no stage {stage!r}")
