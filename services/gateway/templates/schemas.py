"""Request and response bodies of ``/v1/templates``."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from charter.core import critique_templates, feedback_templates

_DEFAULTS = feedback_templates.FeedbackTemplate(name="defaults", description="", question="x")
_TEXT = 4096
_ENDS_WITH_PARENTHESIS = r"^[\s\S]*\($"  # the letter is the next token


class TemplateCreate(BaseModel):
    """A feedback template (see docs/TEMPLATES.md): a sandboxed Jinja2 question and the
    answer cues the platform appends. Fields left out take the shipped defaults."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=f"^{feedback_templates.NAME.pattern}$", max_length=32)
    description: str = Field(default="", max_length=1024)
    format: Literal["chat", "plain"] = "chat"
    system: str | None = Field(default=None, max_length=_TEXT)
    question: str = Field(min_length=1, max_length=16384)
    instruction: str = Field(default=_DEFAULTS.instruction, max_length=_TEXT)
    cot_instruction: str = Field(default=_DEFAULTS.cot_instruction, max_length=_TEXT)
    answer_prefix: str = Field(
        default=_DEFAULTS.answer_prefix, max_length=256, pattern=_ENDS_WITH_PARENTHESIS
    )
    cot_answer_prefix: str = Field(
        default=_DEFAULTS.cot_answer_prefix, max_length=256, pattern=_ENDS_WITH_PARENTHESIS
    )
    delimiters: list[str] = Field(default_factory=list, max_length=32)
    separator: str = Field(default=_DEFAULTS.separator, max_length=64)
    reasoning_lead: str = Field(default=_DEFAULTS.reasoning_lead, max_length=64)


class CritiqueTemplateCreate(BaseModel):
    """A critique template (see docs/TEMPLATES.md): the system turn and the sandboxed
    Jinja2 of the critique and revision request turns. Fields left out take the
    defaults of ``charter-default``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=f"^{feedback_templates.NAME.pattern}$", max_length=32)
    description: str = Field(default="", max_length=1024)
    system: str = Field(default=critique_templates.SYSTEM, min_length=1, max_length=_TEXT)
    critique: str = Field(
        default=critique_templates.DEFAULT_TEMPLATE.critique, min_length=1, max_length=16384
    )
    revision: str = Field(
        default=critique_templates.DEFAULT_TEMPLATE.revision, min_length=1, max_length=16384
    )
    delimiters: list[str] = Field(default_factory=list, max_length=32)


class TemplateOut(BaseModel):
    name: str
    version: int | None
    """None for a shipped template."""
    ref: str
    """What a job's ``params.feedback_template`` (or ``params.critique_template``) takes."""
    built_in: bool
    sha256: str
    spec: dict[str, object]
    created_at: datetime | None = None
    created: bool | None = None
    """On a push: False when an identical version existed (it is answered instead)."""


class PreviewMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant", "system"]
    content: str = Field(max_length=65536)


class RenderRequest(BaseModel):
    """A preview: the prompt a comparison would get, with the answer cue appended."""

    model_config = ConfigDict(extra="forbid")
    conversation: list[PreviewMessage] = Field(min_length=1, max_length=64)
    principle: str = Field(min_length=1, max_length=4000)
    response_a: str = Field(max_length=65536)
    response_b: str = Field(max_length=65536)
    chain_of_thought: bool = False


class RenderOut(BaseModel):
    messages: list[dict[str, str]]
    """Chat turns, or one message of role ``text`` (a plain prompt)."""
    answer_prefix: str


class CritiqueRenderRequest(BaseModel):
    """A preview: the critique and revision conversations of one SL-CAI round."""

    model_config = ConfigDict(extra="forbid")
    conversation: list[PreviewMessage] = Field(min_length=1, max_length=64)
    response: str = Field(max_length=65536)
    critique_request: str = Field(min_length=1, max_length=4000)
    revision_request: str = Field(min_length=1, max_length=4000)
    critique: str = Field(default="(the critique the model writes)", max_length=65536)


class CritiqueRenderOut(BaseModel):
    critique: list[dict[str, str]]
    """The conversation the model critiques from (its reply is the critique)."""
    revision: list[dict[str, str]]
    """The conversation it revises from, with ``critique`` as its earlier reply."""
