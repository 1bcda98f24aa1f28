"""What the operator dashboard reads: overview, job and model statistics.

The judge statistics mirror ``charter.core.judge_stats`` (built with ``from_attributes``
from its dataclasses); docs/STATISTICS.md defines each number.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from charter.core.jobs import ItemState, JobStatus, JobType
from services.gateway.workers.schemas import WorkerOut


class EstimateOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    value: float | None = Field(description="The estimate; null when n is 0.")
    low: float | None = Field(description="Lower end of the 95% interval; null when n < 2.")
    high: float | None = Field(description="Upper end of the 95% interval; null when n < 2.")
    n: int = Field(description="Observations it is computed over.")


class LengthBiasOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    longer_wins: EstimateOut = Field(
        description="Share of decided pairs whose longer response won (Wilson interval)."
    )
    length_ties: int = Field(description="Pairs left out: equal (or unknown) lengths.")
    label_ties: int = Field(description="Pairs left out: label exactly 0.5.")
    correlation: float | None = Field(
        description="Pearson r of (p_a - 0.5) with (len_a - len_b); null when undefined."
    )
    correlation_n: int


class BinOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    low: float
    high: float
    count: int


class JudgeSummaryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    n: int = Field(description="Labels summarised (with a final p_a).")
    mean_p_a: float | None
    position_bias: EstimateOut = Field(
        description="Mean P(response shown first wins) over both orders; 0.5 is unbiased."
    )
    length_bias: LengthBiasOut
    swap_disagreement: EstimateOut = Field(
        description="Share of swapped pairs whose orders picked different winners."
    )
    histogram: list[BinOut] = Field(description="Soft labels p_a in ten bins over [0, 1].")


# --------------------------------------------------------------------------- overview


class QueueDepth(BaseModel):
    model: str
    state: ItemState
    count: int


class MinuteCount(BaseModel):
    minute: datetime = Field(description="Start of the bucket (UTC).")
    count: int


class UnservedJob(BaseModel):
    job_id: str
    type: JobType
    model: str
    created_at: datetime


class WorkerOnline(WorkerOut):
    current_chunk: str | None = Field(
        default=None, description="`job_id:chunk` it is running now; null when idle."
    )


class Stuck(BaseModel):
    expired_leases: int = Field(
        description="Running items whose lease expired and that the sweeper has not re-queued."
    )
    unserved_jobs: list[UnservedJob] = Field(
        description="Active jobs whose model no live worker serves."
    )


class Overview(BaseModel):
    now: datetime
    hours: int
    queue: list[QueueDepth] = Field(description="Items by model and state, active jobs only.")
    workers: list[WorkerOnline] = Field(
        description="Live workers (heartbeat within the stale window) serving a model "
        "this project's jobs use; items_done counts this project's labels."
    )
    live_seconds: float = Field(description="A worker is live if seen this recently.")
    labels_per_minute: list[MinuteCount] = Field(
        description="Labels written per minute over the window, every minute present."
    )
    finished_items: int = Field(
        description="Items that became done/abstained/failed in the window."
    )
    failure_rate: EstimateOut = Field(description="failed / finished_items (Wilson).")
    abstention_rate: EstimateOut = Field(description="abstained / finished_items (Wilson).")
    outbox_backlog: int = Field(description="Chunks with queued items never published.")
    stuck: Stuck


# --------------------------------------------------------------------------- one job


class ReasonCount(BaseModel):
    reason: str = Field(description="The item's last error, numbers as '#', at most 120 chars.")
    count: int


class ChainRound(BaseModel):
    round: int
    principle_id: str
    critique_request: str | None = None
    critique: str | None = None
    revision_request: str | None = None
    revision: str | None = None


class Chain(BaseModel):
    label_id: int
    prompt_id: int
    conversation: list[dict[str, Any]]
    response: str | None = Field(description="The initial response the rounds start from.")
    rounds: list[ChainRound] = Field(description="Critique -> revision, round 1 first.")
    completion: str | None = Field(description="The final revision (the SFT target).")


class JobStats(BaseModel):
    job_id: str
    type: JobType
    model: str
    status: JobStatus
    item_count: int
    counts: dict[str, int] = Field(description="Items by state (every state present).")
    bucket_seconds: int = Field(description="Width of one timeline bucket.")
    timeline: list[MinuteCount] = Field(
        description="Cumulative finished (done, abstained, failed) items at the end of "
        "each bucket since the job was created (the bucket in progress: at this moment)."
    )
    items_per_minute: float | None = Field(description="Over the last 15 minutes of timeline.")
    eta_seconds: float | None = Field(description="Active items / throughput; 0 when none left.")
    failures: list[ReasonCount]
    abstentions: list[ReasonCount]
    labels: int = Field(description="Labels the job has written.")
    sampled: bool = Field(
        description="True when the statistics below read only the most recent labels."
    )
    judge: JudgeSummaryOut | None = Field(description="compare/rl_cai jobs only.")
    by_principle: dict[str, JudgeSummaryOut] = Field(description="compare/rl_cai jobs only.")
    principle_draws: dict[str, int] | None = Field(
        description="sl_cai, critique and revise jobs: critique principles drawn, per round."
    )
    chains: list[Chain] = Field(description="A sample of critique -> revision chains.")


# --------------------------------------------------------------------------- models


class ModelStats(BaseModel):
    model: str
    template_version: str = Field(description="The judge prompt template's version.")
    jobs: int = Field(description="compare/rl_cai jobs with labels from this model.")
    labels: int = Field(description="Their labels.")
    sampled: bool = Field(description="True when the summary read only the most recent labels.")
    judge: JudgeSummaryOut
