"""Job types and their parameters: what a job asks of the workers. Pure data."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from charter.core.engine import SamplingParams


class JobType(StrEnum):
    SL_CAI = "sl_cai"
    """Initial response, then N rounds of critique -> revision; the last revision is the SFT target."""
    RL_CAI = "rl_cai"
    """Two responses, a comparison principle and the A/B feedback label."""
    CRITIQUE = "critique"
    """One critique of a supplied response."""
    REVISE = "revise"
    """One critique -> revision round on a supplied response."""
    COMPARE = "compare"
    """The A/B feedback label for a supplied pair."""


NEEDS_CRITIQUE_PRINCIPLES = {JobType.SL_CAI, JobType.CRITIQUE, JobType.REVISE}
NEEDS_RESPONSE = {JobType.CRITIQUE, JobType.REVISE}
NEEDS_PAIR = {JobType.COMPARE}

ItemState = Literal["queued", "running", "done", "abstained", "failed", "cancelled"]
ITEM_STATES: tuple[str, ...] = get_args(ItemState)
TERMINAL_STATES = frozenset({"done", "abstained", "failed", "cancelled"})


class Sampling(BaseModel):
    """Sampling for generated text (responses, critiques, revisions, reasoning)."""

    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(default=192, ge=1, le=4096)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)

    def params(self, seed: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p, seed=seed
        )


class JobParams(BaseModel):
    """Knobs of a job; every one is recorded with the labels it produced."""

    model_config = ConfigDict(extra="forbid")
    rounds: int = Field(
        default=1, ge=1, le=4, description="Critique/revision rounds (paper: up to 4)."
    )
    chain_of_thought: bool = Field(default=False, description="Reason before the A/B answer.")
    swap: bool = Field(
        default=True, description="Score both orders and average (position debiasing)."
    )
    cot_band: tuple[float, float] = Field(
        default=(0.4, 0.6), description="Chain-of-thought labels are clamped into this band."
    )
    min_choice_mass: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Abstain when P(A)+P(B) is below this."
    )
    few_shot: bool = Field(default=True, description="Show the constitution's worked examples.")
    sampling: Sampling = Field(default_factory=Sampling)

    @model_validator(mode="after")
    def _band(self) -> JobParams:
        low, high = self.cot_band
        if not 0.0 <= low <= 0.5 <= high <= 1.0:
            raise ValueError("cot_band must satisfy 0 <= low <= 0.5 <= high <= 1")
        return self


def job_status(counts: dict[str, int], cancelled: bool) -> str:
    """A job's status derived from its items' states."""
    total = sum(counts.values())
    if cancelled:
        return "cancelled"
    if total and sum(counts.get(s, 0) for s in TERMINAL_STATES) == total:
        return "completed"
    if counts.get("running", 0) or any(counts.get(s, 0) for s in TERMINAL_STATES):
        return "running"
    return "queued"
