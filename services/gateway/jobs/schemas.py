from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from charter.core.jobs import MODEL_PATTERN, ItemState, JobParams, JobStatus, JobType


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: JobType
    batch_id: str = Field(min_length=1, max_length=32)
    constitution: str = Field(
        min_length=1, max_length=80, description="name or name@version; pinned at submission"
    )
    model: str = Field(
        min_length=1,
        max_length=128,
        pattern=MODEL_PATTERN,
        description="A model some worker serves, or run:<id>: the model a completed "
        "training run of the project made, served by a worker that lists it.",
    )
    params: JobParams = Field(default_factory=JobParams)
    seed: int | None = Field(default=None, ge=0, le=2**62, description="Random if omitted.")
    chunk_size: int | None = Field(default=None, ge=1, le=1024, description="Items per task.")


class JobOut(BaseModel):
    id: str
    type: str
    status: JobStatus
    batch_id: str
    constitution: str
    model: str
    params: dict[str, Any]
    seed: int
    item_count: int
    chunk_count: int
    counts: dict[str, int]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class ItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    prompt_id: int
    chunk: int
    status: ItemState
    attempt: int
    last_error: str | None


class LabelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    job_id: str
    prompt_id: int
    work_item_id: int
    kind: str
    conversation: list[dict[str, str]]
    response: str | None
    completion: str | None
    response_a: str | None
    response_b: str | None
    p_a: float | None
    p_a_forward: float | None
    p_a_swapped: float | None
    swap_disagreement: bool | None
    choice_mass: float | None
    choice_logprobs: dict[str, Any] | None
    reasoning: dict[str, Any] | None
    rounds: list[dict[str, Any]] | None
    principle_ids: list[str]
    constitution_ref: str
    model: str
    model_revision: str
    engine: str
    template_version: str
    template_hash: str
    job_params: dict[str, Any]
    engine_config_hash: str | None
    sampling_hash: str | None
    seed: int
    worker_id: str
    attempt: int
    timings: dict[str, Any]
    created_at: datetime
