from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from charter.core import policy_eval_plans as plans
from charter.core.jobs import JobStatus

Stage = Literal["generating", "comparing", "failed", "cancelled"]
Status = Literal["queued", "running", "completed", "cancelled", "failed"]


class PolicyEvalCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=128)
    batch_id: str = Field(
        min_length=1, max_length=32, description="The prompts every policy answers."
    )
    policies: list[plans.PolicySpec] = Field(min_length=2, max_length=plans.MAX_POLICIES)
    judges: list[plans.JudgeSpec] = Field(
        min_length=1,
        max_length=plans.MAX_JUDGES,
        description="Each scores every pair of answers as one compare job: e.g. "
        "'harmlessness' under the default constitution and 'helpfulness' under "
        "helpful-balance, as the paper does.",
    )
    anchor: str | None = Field(
        default=None, description="The policy at Elo 0 (the base model); the first if omitted."
    )
    plot: tuple[str, str] | None = Field(
        default=None,
        description="The judges on the plot's x and y axes; by default helpfulness against "
        "harmlessness when both are judged, else the first two.",
    )
    bootstrap: int = Field(
        default=1000, ge=100, le=10_000, description="Bootstrap samples (over prompts)."
    )
    seed: int | None = Field(default=None, ge=0, le=2**62, description="Random if omitted.")
    chunk_size: int | None = Field(default=None, ge=1, le=1024, description="Items per task.")

    @model_validator(mode="after")
    def _names(self) -> PolicyEvalCreate:
        policies = [p.name for p in self.policies]
        judges = [j.name for j in self.judges]
        if repeated := plans.repeated(policies):
            raise ValueError(f"policies: names must be unique; repeated: {repeated}")
        if repeated := plans.repeated(judges):
            raise ValueError(f"judges: names must be unique; repeated: {repeated}")
        if self.anchor is not None and self.anchor not in policies:
            raise ValueError(f"anchor: {self.anchor!r} is not one of the policies {policies}")
        if self.plot is not None:
            unknown = [j for j in self.plot if j not in judges]
            if unknown or self.plot[0] == self.plot[1]:
                raise ValueError(f"plot: two different judges of {judges}, got {list(self.plot)}")
        return self


class PolicyEvalJobOut(BaseModel):
    role: Literal["generate", "compare"]
    name: str
    """The policy's name (generate) or the judge's (compare)."""
    job_id: str
    status: JobStatus
    counts: dict[str, int]


class PolicyEvalOut(BaseModel):
    id: str
    name: str
    batch_id: str
    stage: Stage
    status: Status
    error: str | None
    policies: list[dict[str, Any]]
    judges: list[dict[str, Any]]
    anchor: str
    plot: list[str] | None
    bootstrap: int
    seed: int
    pairs_batch_id: str | None
    comparisons: int | None
    """Rows of the pairs batch (each judge scores all of them); None while generating."""
    jobs: list[PolicyEvalJobOut]
    items_total: int
    items_finished: int
    created_at: datetime
    advanced_at: datetime | None


class RatingOut(BaseModel):
    policy: str
    elo: float
    low: float
    high: float
    comparisons: int
    wins: float


class HeadToHeadOut(BaseModel):
    a: str
    b: str
    comparisons: int
    a_preferred: float | None


class JudgeReportOut(BaseModel):
    config: dict[str, Any]
    job_id: str | None
    counts: dict[str, int]
    scored: int
    abstained: int
    ratings: list[RatingOut]
    """Best first; empty until the scored comparisons connect every policy."""
    head_to_head: list[HeadToHeadOut]
    rating_error: str | None
    """Why there are no ratings yet (e.g. nothing scored), or None."""


class PolicyEvalReportOut(BaseModel):
    """Every number of a policy evaluation; docs/EVALUATION.md defines each one."""

    id: str
    name: str
    stage: Stage
    status: Status
    complete: bool
    """Every job completed: until then the scores cover the comparisons labelled so far."""
    anchor: str
    level: float
    bootstrap: int
    generations: dict[str, dict[str, int]]
    """Per policy: prompts it answered, of how many."""
    judges: dict[str, JudgeReportOut]
    plot: list[str] | None
