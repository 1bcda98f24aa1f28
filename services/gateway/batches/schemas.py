from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

TEXT_MAX = 32_000


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=TEXT_MAX)


def _string(name: str) -> dict[str, Any]:
    return {"required": [name], "properties": {name: {"type": "string"}}}


# What the validator below checks, in JSON Schema, so the OpenAPI document says it too
# (all but "messages end with a user turn", which JSON Schema cannot express).
_SHAPE_SCHEMA: dict[str, Any] = {
    "allOf": [
        {
            "oneOf": [
                _string("prompt"),
                {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
            ]
        },
        {
            "anyOf": [
                {"properties": {"response_a": {"type": "null"}, "response_b": {"type": "null"}}},
                {"allOf": [_string("response_a"), _string("response_b")]},
            ]
        },
    ]
}


class PromptRow(BaseModel):
    """A prompt (plain text or chat messages) with optional supplied responses."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_SHAPE_SCHEMA)
    prompt: str | None = Field(default=None, min_length=1, max_length=TEXT_MAX)
    messages: list[ChatMessage] | None = Field(default=None, min_length=1, max_length=64)
    response: str | None = Field(default=None, max_length=TEXT_MAX)
    response_a: str | None = Field(default=None, max_length=TEXT_MAX)
    response_b: str | None = Field(default=None, max_length=TEXT_MAX)

    @model_validator(mode="after")
    def _shape(self) -> PromptRow:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of 'prompt' or 'messages'")
        if self.messages is not None and self.messages[-1].role != "user":
            raise ValueError("messages must end with a user turn")
        if (self.response_a is None) != (self.response_b is None):
            raise ValueError("'response_a' and 'response_b' come together")
        return self


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=128)
    rows: list[PromptRow] = Field(min_length=1, max_length=10_000)


class BatchOut(BaseModel):
    id: str
    name: str
    row_count: int
    created_at: datetime


class PromptOut(BaseModel):
    id: int
    position: int
    prompt: str | None
    messages: list[dict[str, str]] | None
    response: str | None
    response_a: str | None
    response_b: str | None
