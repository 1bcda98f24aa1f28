from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from charter.core.eval_plans import InjectionSpec, JudgeConfig
from charter.core.jobs import JobStatus


class EvalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gold_set: str = Field(
        min_length=1, max_length=80, description="name or name@version; pinned at submission"
    )
    name: str = Field(default="", max_length=128)
    configs: list[JudgeConfig] = Field(min_length=1, max_length=8)
    injection: InjectionSpec | None = Field(
        default=None, description="Also score adversarial variants of the gold set."
    )
    seed: int | None = Field(default=None, ge=0, le=2**62, description="Random if omitted.")
    chunk_size: int | None = Field(default=None, ge=1, le=1024, description="Items per task.")


class EvalJobOut(BaseModel):
    config: str
    variant: str
    job_id: str
    status: JobStatus
    counts: dict[str, int]


class EvalOut(BaseModel):
    id: str
    name: str
    gold_set: str
    status: JobStatus
    configs: list[dict[str, Any]]
    injection: dict[str, Any] | None
    seed: int
    jobs: list[EvalJobOut]
    items_total: int
    items_finished: int
    created_at: datetime


class AttackOut(BaseModel):
    id: str
    family: str
    description: str
    text: str


class EvalReportOut(BaseModel):
    """Every number of an evaluation; docs/EVALUATION.md defines each one."""

    id: str
    name: str
    gold_set: str
    status: JobStatus
    complete: bool
    """Every job completed (not cancelled): until then the numbers cover the items
    labelled so far."""
    configs: dict[str, dict[str, Any]]
    """Per configuration (by name): its definition, its jobs' item counts and ``metrics``."""
    comparisons: list[dict[str, Any]]
    """Every pair of configurations, paired on the same gold items."""
    injection: dict[str, Any] | None
    """Per configuration: flips and label shifts with each combination of defences."""
