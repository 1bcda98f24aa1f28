from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from charter.core.jobs import BUILTIN_SMOLLM2, MODEL_PATTERN
from services.gateway.datasets.schemas import NAME_PATTERN


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_MODEL = Field(
    default=BUILTIN_SMOLLM2,
    min_length=1,
    max_length=128,
    pattern=MODEL_PATTERN,
    description="The model that writes the synthetic data.",
)


class RequestsJobCreate(_Strict):
    constitution: str = Field(
        min_length=1,
        max_length=80,
        description="A constitution with a `classifier` section (name or name@version): its "
        "categories are what the requests are written for, and the job runs under it.",
    )
    model: str = _MODEL
    per_category: int = Field(
        default=50, ge=1, le=2000, description="Requests written for each category."
    )
    max_tokens: int = Field(default=96, ge=8, le=1024, description="Tokens per request.")
    temperature: float = Field(
        default=1.0, ge=0.0, le=2.0, description="Sampling temperature (variety across requests)."
    )
    seed: int | None = Field(default=None, ge=0, le=2**62)


class ResponsesJobCreate(_Strict):
    requests_job: str = Field(
        min_length=1, max_length=64, description="A finished requests job (POST .../requests)."
    )
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=MODEL_PATTERN,
        description="The model that paraphrases, answers and refuses; default: the requests job's.",
    )
    max_tokens: int = Field(default=160, ge=8, le=2048, description="Tokens per response.")
    seed: int | None = Field(default=None, ge=0, le=2**62)


class ClassifierDatasetCreate(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="The dataset (kind classifier).")
    responses_job: str = Field(
        min_length=1, max_length=64, description="A finished responses job (POST .../responses)."
    )


RUN_ID = r"^[0-9a-f]{32}$"
TEXT_MAX = 32_000


class ClassifyRequest(_Strict):
    classifier: str = Field(pattern=RUN_ID, description="A completed classifier run (its id).")
    target: Literal["input", "output", "exchange"] | None = Field(
        default=None,
        description="What is classified; it must be what the classifier was trained on "
        "(default: that).",
    )
    prompt: str | None = Field(
        default=None, max_length=TEXT_MAX, description="The user's message (input, exchange)."
    )
    response: str | None = Field(
        default=None, max_length=TEXT_MAX, description="The model's response (output, exchange)."
    )
    threshold: float | None = Field(
        default=None, gt=0.0, lt=1.0, description="Flag at this score; default: the run's."
    )


class ClassifyOut(BaseModel):
    classifier: str
    target: Literal["input", "output", "exchange"]
    scores: dict[str, float] = Field(description="Each restricted category's score (0-1).")
    score: float = Field(description="The highest category score.")
    category: str | None = Field(description="The highest-scoring category when flagged.")
    flagged: bool = Field(description="score >= threshold: block it.")
    threshold: float
    score_ms: float = Field(description="Time the classifier server spent scoring.")


class StreamHeader(_Strict):
    """The first line of a classify stream; each later line is ``{"token": "..."}``."""

    classifier: str = Field(pattern=RUN_ID)
    prompt: str | None = Field(default=None, max_length=TEXT_MAX)
    threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
