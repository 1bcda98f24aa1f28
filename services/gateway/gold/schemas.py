from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from charter.core.judge_eval import check_gold
from services.gateway.batches.schemas import TEXT_MAX, ChatMessage

NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
MAX_ROWS = 20_000
"""Rows in one gold set: it is hashed (and so held) whole when it is pushed."""


class GoldRow(BaseModel):
    """One comparison with a known answer: a conversation, two responses, which is better."""

    model_config = ConfigDict(extra="forbid")
    prompt: str | None = Field(default=None, min_length=1, max_length=TEXT_MAX)
    messages: list[ChatMessage] | None = Field(default=None, min_length=1, max_length=64)
    response_a: str = Field(max_length=TEXT_MAX)
    response_b: str = Field(max_length=TEXT_MAX)
    answer: Literal["a", "b"] = Field(description="The better response.")
    p_gold: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Soft gold: P(response a is better), on the answer's side of 0.5.",
    )
    category: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _shape(self) -> GoldRow:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.messages is not None and self.messages[-1].role != "user":
            raise ValueError("messages must end with a user turn")
        check_gold(self.answer, self.p_gold)
        return self


class GoldSetOut(BaseModel):
    id: str
    name: str
    version: int
    ref: str
    batch_id: str
    row_count: int
    content_hash: str
    categories: dict[str, int]
    created_at: datetime
    created: bool | None = None
    """On a push: False when the rows equal the latest version's (that version is answered)."""


class GoldItemOut(BaseModel):
    position: int
    prompt: str | None
    messages: list[dict[str, str]] | None
    response_a: str
    response_b: str
    answer: str
    p_gold: float | None
    category: str | None
