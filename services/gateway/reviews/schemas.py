from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from charter.core.review_sampling import Strategy, StratifyBy

NOTE_MAX = 2000
REVIEWER_MAX = 128
MAX_QUEUE_SIZE = 1000
Choice = Literal["A", "B", "tie"]


class QueueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = Field(
        ge=1, le=MAX_QUEUE_SIZE, description="Labels to review (capped by the job's)."
    )
    strategy: Strategy = "random"
    by: StratifyBy | None = Field(
        default=None,
        description="Strata of a stratified sample: principle; confidence (bins of |P(A)-0.5|, "
        "comparison jobs); swap_disagreement (whether the two orders disagreed, swapped "
        "comparisons). With random, it only restricts the labels to those it applies to.",
    )
    seed: int | None = Field(
        default=None, ge=0, le=2**62, description="The same seed draws the same labels; default 0."
    )

    @model_validator(mode="after")
    def _by(self) -> QueueCreate:
        if self.strategy == "stratified" and self.by is None:
            raise ValueError("a stratified queue needs 'by' (principle, confidence or ...)")
        return self


class QueueOut(BaseModel):
    id: str
    job_id: str
    job_type: str
    strategy: str
    by: str | None
    seed: int
    size: int = Field(description="Items in the queue.")
    requested_size: int
    reviewed: int = Field(description="Items with at least one verdict.")
    strata: dict[str, int] = Field(description="Items per stratum (empty for a plain sample).")
    target_reached_at: datetime | None
    created_at: datetime
    items: list[int] = Field(description="The queue's label ids, in queue order.")


class VerdictOut(BaseModel):
    id: int
    label_id: int
    queue_id: str | None
    api_key_id: str
    key_prefix: str
    reviewer: str
    choice: Choice | None
    satisfies: bool | None
    note: str | None
    agrees: bool = Field(description="Whether the verdict matches the AI label.")
    source: str
    revision: int = Field(description="1 for a first verdict; each replacement adds one.")
    replaced: bool = Field(default=False, description="This request replaced an earlier verdict.")
    history: list[dict[str, Any]] = Field(description="The reviewer's earlier verdicts.")
    created_at: datetime
    updated_at: datetime


class ItemOut(BaseModel):
    position: int
    label_id: int
    stratum: str | None
    kind: str = Field(description="comparison (give a choice) or revision (give satisfies).")
    conversation: list[dict[str, str]]
    principle_ids: list[str]
    principles: list[dict[str, Any]] = Field(description="The principles' texts.")
    response_a: str | None = None
    response_b: str | None = None
    response: str | None = Field(default=None, description="Revision jobs: the first answer.")
    rounds: list[dict[str, Any]] | None = Field(
        default=None, description="Revision jobs: the critique -> revision chain."
    )
    completion: str | None = Field(default=None, description="The final revision (or critique).")
    ai_label: dict[str, Any]
    reviewed_by_me: bool = Field(description="The calling reviewer already gave a verdict.")
    my_verdict: VerdictOut | None = None
    verdicts: int = Field(description="Verdicts on this label, by anyone.")


class VerdictCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    choice: Choice | None = Field(default=None, description="Comparisons: A, B or tie.")
    satisfies: bool | None = Field(
        default=None, description="Revisions: does the revision satisfy the principle?"
    )
    note: str | None = Field(default=None, max_length=NOTE_MAX)
    reviewer: str = Field(
        default="",
        max_length=REVIEWER_MAX,
        description="The person's name, when one key is shared by several reviewers.",
    )

    @model_validator(mode="after")
    def _one(self) -> VerdictCreate:
        if (self.choice is None) == (self.satisfies is None):
            raise ValueError("give exactly one of 'choice' (comparisons) or 'satisfies'")
        return self


class RateOut(BaseModel):
    agreed: int
    n: int
    rate: float | None
    low: float | None = Field(description="Wilson 95% interval.")
    high: float | None


class KappaOut(BaseModel):
    mean: float | None = Field(description="Mean pairwise Cohen's kappa between reviewers.")
    pairs: int
    undefined_pairs: int
    items: int = Field(description="Labels reviewed by two or more humans.")


class CalibrationOut(BaseModel):
    low: float
    high: float
    rate: RateOut


class AgreementOut(BaseModel):
    job_id: str | None
    model: str | None
    labels: int = Field(description="Reviewed labels.")
    reviewers: int
    verdicts: int
    overall: RateOut
    by_principle: dict[str, RateOut]
    by_model: dict[str, RateOut]
    calibration: list[CalibrationOut] = Field(
        description="Comparisons: agreement by AI confidence max(P(A), 1-P(A))."
    )
    kappa: KappaOut


class ReviewerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    key_prefix: str = Field(min_length=1, max_length=32)
    name: str = Field(default="", max_length=REVIEWER_MAX)


class VerdictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    choice: Choice | None = None
    satisfies: bool | None = None
    note: str | None = Field(default=None, max_length=NOTE_MAX)

    @model_validator(mode="after")
    def _one(self) -> VerdictIn:
        if (self.choice is None) == (self.satisfies is None):
            raise ValueError("give exactly one of 'choice' (comparisons) or 'satisfies'")
        return self


class ImportLine(BaseModel):
    """One line of ``GET .../reviews/export``; the other fields it carries are ignored
    on import (they describe the label, which is the job's own)."""

    model_config = ConfigDict(extra="ignore")
    label_id: int = Field(ge=1, le=2**63 - 1)
    verdict: VerdictIn
    reviewer: ReviewerIn
    queue_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ImportOut(BaseModel):
    lines: int
    created: int
    updated: int
    unchanged: int
