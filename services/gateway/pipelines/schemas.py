"""Request and response bodies of ``/v1/pipelines``.

A pipeline's body names the prompts, the base model and the constitution once, and
holds one section per stage (``charter.core.pipeline_plans``); each section takes what
that stage's own API takes (job params, a dataset mix, a run config, judges), so an
error names ``body.<stage>.<field>`` exactly as the stage's own route would.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from charter.core import policy_eval_plans
from charter.core.engine import SamplingParams
from charter.core.jobs import MODEL_PATTERN, JobParams
from charter.core.pipeline_plans import RL_STAGES, PipelineState, StageKind, StageStatus
from charter.core.run_configs import (
    DPOConfig,
    GRPOConfig,
    PMConfig,
    PPOConfig,
    RLOOConfig,
    RunConfig,
    SFTConfig,
)
from services.gateway.datasets.schemas import MixSpec

Config = TypeVar("Config", bound=RunConfig)
_BATCH = {"min_length": 1, "max_length": 32}


class JobStage(BaseModel):
    """A labelling stage: the job's params, as ``POST /v1/jobs`` takes them."""

    model_config = ConfigDict(extra="forbid")
    params: JobParams = Field(default_factory=JobParams)


class SFTDataStage(BaseModel):
    """The SFT dataset: the SL-CAI revisions, optionally mixed with helpfulness data."""

    model_config = ConfigDict(extra="forbid")
    mix: MixSpec | None = Field(
        default=None,
        description="Rows of another SFT dataset (e.g. uploaded helpful conversations) "
        "mixed in at a share, as the paper mixes helpfulness data into SL-CAI's.",
    )


class PreferenceDataStage(BaseModel):
    """The preference dataset: the RL-CAI labels, optionally filtered."""

    model_config = ConfigDict(extra="forbid")
    min_confidence: float | None = Field(default=None, ge=0.5, le=1.0)
    exclude_swap_disagreements: bool = False


class RunStage(BaseModel, Generic[Config]):
    """A training stage: the run's config, as ``POST /v1/runs`` takes it."""

    model_config = ConfigDict(extra="forbid")
    config: Config


class EloStage(BaseModel):
    """The closing Elo evaluation of the base, SFT and RL policies."""

    model_config = ConfigDict(extra="forbid")
    judges: list[policy_eval_plans.JudgeSpec] | None = Field(
        default=None,
        min_length=1,
        max_length=policy_eval_plans.MAX_JUDGES,
        description="As POST /v1/policy-evals takes them; by default one 'harmlessness' "
        "judge: the base model under the pipeline's constitution.",
    )
    baseline: bool = Field(
        default=True,
        description="Also rate the base model told the constitution as its system prompt "
        "(the baseline the paper left out).",
    )
    sampling: SamplingParams = Field(
        default_factory=SamplingParams, description="How every policy samples its answers."
    )
    bootstrap: int = Field(default=1000, ge=100, le=10_000)
    plot: tuple[str, str] | None = None


class PipelineCreate(BaseModel):
    """The whole recipe: SL-CAI -> SFT -> RL-CAI -> PM -> RL -> Elo (docs/PIPELINES.md)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=128)
    base_model: str = Field(
        min_length=1,
        max_length=128,
        pattern=MODEL_PATTERN,
        description="The model SL-CAI critiques and revises with, the SFT and PM runs start "
        "from, and the Elo evaluation's anchor.",
    )
    constitution: str = Field(
        min_length=1,
        max_length=80,
        description="name or name@version; pinned at submission, for every stage.",
    )
    prompts: str = Field(**_BATCH, description="Red-team prompts: the SL-CAI batch.")  # type: ignore[arg-type]
    rl_prompts: str | None = Field(
        default=None,
        **_BATCH,  # type: ignore[arg-type]
        description="The RL-CAI batch (the SFT model answers each twice and compares); "
        "default: prompts.",
    )
    eval_prompts: str | None = Field(
        default=None,
        **_BATCH,  # type: ignore[arg-type]
        description="The Elo evaluation's batch (held-out prompts); default: rl_prompts.",
    )
    seed: int | None = Field(default=None, ge=0, le=2**62, description="Random if omitted.")
    chunk_size: int | None = Field(default=None, ge=1, le=1024, description="Items per task.")
    sl_cai: JobStage = Field(default_factory=JobStage)
    sft_data: SFTDataStage = Field(default_factory=SFTDataStage)
    sft: RunStage[SFTConfig] = Field(
        default_factory=lambda: RunStage[SFTConfig](config=SFTConfig())
    )
    rl_cai: JobStage = Field(default_factory=JobStage)
    pref_data: PreferenceDataStage = Field(default_factory=PreferenceDataStage)
    pm: RunStage[PMConfig] = Field(default_factory=lambda: RunStage[PMConfig](config=PMConfig()))
    ppo: RunStage[PPOConfig] | None = Field(
        default=None,
        description="Policy training stages: any of ppo, dpo, rloo, grpo; ppo if none.",
    )
    dpo: RunStage[DPOConfig] | None = None
    rloo: RunStage[RLOOConfig] | None = None
    grpo: RunStage[GRPOConfig] | None = None
    elo: EloStage = Field(default_factory=EloStage)

    @model_validator(mode="after")
    def _rl(self) -> PipelineCreate:
        if not self.rl():
            self.ppo = RunStage[PPOConfig](config=PPOConfig())
        if self.elo.judges is not None:
            names = [j.name for j in self.elo.judges]
            if repeated := policy_eval_plans.repeated(names):
                raise ValueError(f"elo.judges: names must be unique; repeated: {repeated}")
            if self.elo.plot is not None and (
                any(j not in names for j in self.elo.plot) or self.elo.plot[0] == self.elo.plot[1]
            ):
                raise ValueError(f"elo.plot: two different judges of {names}")
        return self

    def rl(self) -> list[str]:
        """The policy-training stages asked for."""
        return [name for name in RL_STAGES if getattr(self, name) is not None]


class RerunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str = Field(
        min_length=1,
        max_length=16,
        description="Supersede this stage and every stage downstream of it, and run them "
        "again from the current outputs of the others.",
    )


class StageOut(BaseModel):
    name: str
    kind: StageKind
    needs: list[str]
    status: Literal["pending"] | StageStatus
    """The current attempt's status; pending before its first."""
    attempt: int
    """The current attempt (1-based); 0 while pending."""
    output: str | None
    """What later stages read: job id, dataset name@version, run id or evaluation id."""
    error: str | None
    inputs: dict[str, Any] | None
    """The exact request body the current attempt was submitted with, and the upstream
    attempts it read (``upstream``: stage -> attempt)."""
    job_id: str | None
    dataset_version_id: str | None
    run_id: str | None
    policy_eval_id: str | None
    created_at: datetime | None
    finished_at: datetime | None


class PipelineOut(BaseModel):
    id: str
    name: str
    state: PipelineState
    error: str | None
    spec: dict[str, Any]
    """As stored: pinned constitution, seed and every default filled in."""
    stages: list[StageOut]
    created_at: datetime
    advanced_at: datetime | None
