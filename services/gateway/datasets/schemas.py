from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from charter.core.export import PREFERENCE_KINDS, SFT_KINDS
from charter.db.models import as_utc

LabelDatasetKind = Literal["sft", "preference"]
"""The kinds a dataset frozen from labels can have."""
DatasetKind = Literal["sft", "preference", "classifier"]
"""Every dataset kind: ``classifier`` rows are uploaded or built from classifier-data
jobs (``POST /v1/classifier-data/datasets``), never frozen from a label filter."""
LabelKind = Literal[SFT_KINDS + PREFERENCE_KINDS]  # type: ignore[valid-type]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
TEXT_MAX = 32_000


class DatasetFilter(BaseModel):
    """Which labels a version freezes. Every condition is optional; all must hold."""

    model_config = ConfigDict(extra="forbid")
    job_ids: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="Labels of these jobs only. Without it, every job but those of judge "
        "evaluations (their gold items and injected variants are no training data).",
    )
    constitution: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        description="name@version, or a name for every version of that constitution.",
    )
    kinds: list[LabelKind] | None = Field(  # type: ignore[valid-type]
        default=None,
        min_length=1,
        description="Label kinds; default: every kind the dataset kind can hold but "
        "generations (sft: sl_cai, critique, revise, and generate when named; preference: "
        "rl_cai, compare).",
    )
    min_confidence: float | None = Field(
        default=None,
        ge=0.5,
        le=1.0,
        description="Preference only: the soft label of the chosen side, max(p_a, 1 - p_a).",
    )
    exclude_swap_disagreements: bool = Field(
        default=False,
        description="Preference only: drop labels whose two orders picked different winners.",
    )
    review: Literal["reviewed", "agreed", "human_verdicts"] | None = Field(
        default=None,
        description="Human review (docs/REVIEW.md): reviewed = labels with a verdict; agreed = "
        "labels most of whose reviewers agree with the AI; human_verdicts = labels with a "
        "decisive human majority, whose verdict replaces the AI's (preference: chosen is "
        "the humans' side, probability 1.0).",
    )
    created_after: datetime | None = Field(default=None, description="Inclusive; UTC if naive.")
    created_before: datetime | None = Field(default=None, description="Exclusive; UTC if naive.")

    @model_validator(mode="after")
    def _window(self) -> DatasetFilter:
        if self.created_after and self.created_before:
            after, before = as_utc(self.created_after), as_utc(self.created_before)
            if after >= before:
                raise ValueError("created_after must be earlier than created_before")
        return self


class MixSpec(BaseModel):
    """Mix rows of another version (typically an upload) in at a stated share."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=140, description="name or name@version")
    ratio: float = Field(
        gt=0.0, lt=1.0, description="Share of the mixed rows in the new version's rows."
    )
    seed: int = Field(default=0, ge=0, le=2**62, description="Draws and interleaves the rows.")


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    kind: LabelDatasetKind
    filter: DatasetFilter = Field(default_factory=DatasetFilter)
    mix: MixSpec | None = None


class DatasetVersionOut(BaseModel):
    name: str
    kind: str
    version: int
    ref: str
    source: Literal["labels", "upload", "classifier_data"] = Field(
        description="labels: frozen from a label filter; upload: uploaded rows; "
        "classifier_data: built from classifier-data jobs (the filter names them)."
    )
    state: Literal["freezing", "ready", "failed"] = Field(
        description="freezing: rows are being copied in the background (not exportable yet)."
    )
    rows_done: int = Field(description="Rows frozen so far (progress).")
    rows_total: int = Field(description="Rows the version will have.")
    row_count: int = Field(description="The version's rows; 0 until it is ready.")
    checksum: str | None = Field(
        description="sha256 of the version's full JSONL export; null until it is ready."
    )
    error: str | None = Field(default=None, description="Why freezing failed.")
    filter: dict[str, Any]
    mix: dict[str, Any] | None
    created_at: datetime
    ready_at: datetime | None = None


# --------------------------------------------------------------------------- uploaded rows


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=TEXT_MAX)


Text = Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]
Turns = Annotated[list[Message], Field(min_length=1, max_length=128)]


def _turns(value: str | Turns, role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": m.role, "content": m.content} for m in value]


def _check_prompt(turns: list[dict[str, str]]) -> None:
    if turns[-1]["role"] != "user":
        raise ValueError("the prompt must end with a user turn")


def _check_reply(turns: list[dict[str, str]], name: str) -> None:
    if any(t["role"] != "assistant" for t in turns):
        raise ValueError(f"'{name}' holds assistant turns only")


class SftUpload(BaseModel):
    """TRL SFT shapes: prompt/completion (text or messages) or a ``messages`` conversation."""

    model_config = ConfigDict(extra="forbid")
    prompt: Text | Turns | None = None
    completion: Text | Turns | None = None
    messages: Turns | None = None

    @model_validator(mode="after")
    def _shape(self) -> SftUpload:
        if self.messages is not None:
            if self.prompt is not None or self.completion is not None:
                raise ValueError("give 'messages' or 'prompt' and 'completion', not both")
            if self.messages[-1].role != "assistant":
                raise ValueError("'messages' must end with an assistant turn")
        elif self.prompt is None or self.completion is None:
            raise ValueError("give 'prompt' and 'completion' (or 'messages')")
        row = self.canonical()
        _check_prompt(row["prompt"])
        _check_reply(row["completion"], "completion")
        return self

    def canonical(self) -> dict[str, Any]:
        if self.messages is not None:
            turns = _turns(self.messages, "user")
            split = len(turns)
            while split and turns[split - 1]["role"] == "assistant":
                split -= 1
            if split == 0:
                raise ValueError("'messages' needs a user turn before the assistant reply")
            return {"prompt": turns[:split], "completion": turns[split:]}
        assert self.prompt is not None and self.completion is not None
        return {
            "prompt": _turns(self.prompt, "user"),
            "completion": _turns(self.completion, "assistant"),
        }


class PreferenceUpload(BaseModel):
    """TRL preference shape: prompt, chosen, rejected (text or messages)."""

    model_config = ConfigDict(extra="forbid")
    prompt: Text | Turns
    chosen: Text | Turns
    rejected: Text | Turns
    chosen_probability: float = Field(
        default=1.0, ge=0.5, le=1.0, description="1.0 for a hard (human) preference."
    )

    @model_validator(mode="after")
    def _shape(self) -> PreferenceUpload:
        row = self.canonical()
        _check_prompt(row["prompt"])
        _check_reply(row["chosen"], "chosen")
        _check_reply(row["rejected"], "rejected")
        return self

    def canonical(self) -> dict[str, Any]:
        return {
            "prompt": _turns(self.prompt, "user"),
            "chosen": _turns(self.chosen, "assistant"),
            "rejected": _turns(self.rejected, "assistant"),
            "chosen_probability": self.chosen_probability,
        }


class ClassifierUpload(BaseModel):
    """A classifier row: a user message, optionally a response, its category, and whether
    the message (``restricted``) and the response (``harmful``) are to be flagged."""

    model_config = ConfigDict(extra="forbid")
    prompt: Text
    response: Text | None = None
    category: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    restricted: bool
    harmful: bool | None = Field(
        default=None, description="Required with a response: whether it gives restricted content."
    )
    variant: str | None = Field(default=None, max_length=64)
    response_kind: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _shape(self) -> ClassifierUpload:
        if (self.response is None) != (self.harmful is None):
            raise ValueError("give 'harmful' with a 'response', and neither without one")
        if self.harmful and not self.restricted:
            raise ValueError("a harmful response answers a restricted request ('restricted': true)")
        return self

    def canonical(self) -> dict[str, Any]:
        return self.model_dump()


UPLOAD_MODELS: dict[str, type[SftUpload] | type[PreferenceUpload] | type[ClassifierUpload]] = {
    "sft": SftUpload,
    "preference": PreferenceUpload,
    "classifier": ClassifierUpload,
}
