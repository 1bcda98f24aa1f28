from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RunType = Literal["sft", "pm", "dpo", "ppo"]
RunStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
# Which dataset kind each run type trains on (PPO reads prompts from either kind).
DATASET_KINDS: dict[str, tuple[str, ...]] = {
    "sft": ("sft",),
    "pm": ("preference",),
    "dpo": ("preference",),
    "ppo": ("sft", "preference"),
}
MODEL_PATTERN = r"^(run:[0-9a-f]{32}|[A-Za-z0-9._/-]{1,128})$"


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: RunType
    dataset: str = Field(min_length=1, max_length=160, description="Dataset name or name@version.")
    base_model: str = Field(
        pattern=MODEL_PATTERN,
        description="A model name the trainer serves (e.g. smollm2) or run:<id> of a finished run.",
    )
    reward_run: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{32}$",
        description="PPO: the completed PM run to optimise.",
    )
    reference_model: str | None = Field(
        default=None, pattern=MODEL_PATTERN, description="PPO: KL reference; default base_model."
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Trainer config overrides (hyper-parameters); it may not set the fields "
        "above or dataset_version_id (422 naming config.<key>).",
    )


PROVENANCE = frozenset(RunCreate.model_fields) - {"config"} | {"dataset_version_id"}
"""What a run trains on, from its validated fields only: keys ``config`` may not set."""


class RunOut(BaseModel):
    id: str
    type: str
    status: str
    dataset: str | None
    dataset_version_id: str | None
    config: dict[str, Any]
    artifact_uri: str | None
    checkpoint: str | None
    error: str | None
    lease_owner: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_metrics: dict[str, float] | None = None


class Claimed(RunOut):
    lease_token: str = Field(
        description="The secret of this lease, shown only here: every heartbeat, metrics, "
        "checkpoint, complete and fail call of the lease presents it. A later claim of the "
        "run (after the lease expired) issues a new one, and this one stops working."
    )


class ClaimRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    owner: str = Field(
        min_length=1, max_length=128, description="A label for the trainer (lease_owner)."
    )
    types: list[RunType] | None = None


class Lease(BaseModel):
    """A lease-holder call: fenced on the claim's ``lease_token``, never on ``owner``."""

    model_config = ConfigDict(extra="forbid")
    lease_token: str | None = Field(
        default=None,
        max_length=128,
        description="Required: the lease_token of the claim; 409 when it is missing, wrong, "
        "or the lease was taken over.",
    )
    owner: str | None = Field(
        default=None,
        max_length=128,
        description="Not checked (anyone can read lease_owner); accepted so that a trainer "
        "that still sends it is told about lease_token.",
    )


class MetricPoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    step: int = Field(ge=0, le=2**31 - 1)  # run_metrics.step is a 32-bit integer
    metrics: dict[str, float] = Field(max_length=64)


class MetricsReport(Lease):
    points: list[MetricPoint] = Field(min_length=1, max_length=1000)


class CheckpointReport(Lease):
    checkpoint: str = Field(
        min_length=1,
        max_length=1024,
        description="A directory inside <artifacts_dir>/runs/<run id>/: an absolute path or a "
        "file:// URI.",
    )


class CompleteReport(Lease):
    artifact_uri: str = Field(
        min_length=1,
        max_length=1024,
        description="The model directory, a file:// URI inside <artifacts_dir>/runs/<run id>/.",
    )


class FailReport(Lease):
    error: str = Field(min_length=1, max_length=20_000)


class MetricOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    step: int
    metrics: dict[str, float]
    created_at: datetime
