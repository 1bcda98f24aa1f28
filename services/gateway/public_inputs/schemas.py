from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from charter.core.constitution import NAME_PATTERN as CONSTITUTION_NAME
from charter.core.jobs import BUILTIN_SMOLLM2, MODEL_PATTERN

NAME_PATTERN = r"[a-z0-9][a-z0-9._-]{0,63}"
_CSV = "The file's text. A string is held to the gateway's max_string_chars (1 MB by "
"default); a larger population is sent as format json, whose strings are short."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JsonUpload(_Strict):
    format: Literal["json"]
    statements: list[Any] = Field(
        description="[{id, text, author?}]; ids are strings or integers.", max_length=10_000
    )
    votes: list[Any] = Field(
        description="[{participant, statement, vote}]; a vote is 1, -1, 0 or agree, disagree, pass."
    )


class CsvUpload(_Strict):
    format: Literal["csv"]
    statements: str = Field(description=f"statement,text[,author] rows. {_CSV}")
    votes: str = Field(description=f"participant,statement,vote rows. {_CSV}")


class PolisUpload(_Strict):
    format: Literal["polis"]
    comments: str = Field(description=f"A Polis export's comments.csv. {_CSV}")
    participants_votes: str = Field(description=f"A Polis export's participants-votes.csv. {_CSV}")


Upload = Annotated[JsonUpload | CsvUpload | PolisUpload, Field(discriminator="format")]


class PublicInputOut(BaseModel):
    id: str
    name: str
    version: int
    ref: str
    source_format: str
    statement_count: int
    participant_count: int
    vote_count: int
    content_hash: str
    created_at: datetime
    created: bool | None = None
    """On a push: False when the input equals the latest version's (that version is
    answered)."""


class AnalysisParameters(_Strict):
    min_votes: int = Field(
        default=7, ge=1, le=10_000, description="Votes a participant needs to be grouped."
    )
    max_groups: int = Field(default=5, ge=1, le=10, description="Most opinion groups tried.")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class AnalysisQuery(AnalysisParameters):
    min_group_agreement: float = Field(
        default=0.6, ge=0.0, le=1.0, description="A candidate: every group's P(agree) this high."
    )
    divisive_threshold: float = Field(default=0.5, gt=0.0, le=1.0)
    participants: bool = Field(default=False, description="List each participant's position.")


class GroupOut(BaseModel):
    index: int
    size: int
    x: float
    y: float


class GroupVotesOut(BaseModel):
    agree: int
    disagree: int
    passed: int
    seen: int
    p_agree: float
    p_disagree: float


class StatementOut(BaseModel):
    id: str
    text: str
    consensus: float = Field(description="Product over groups of P(agree).")
    disagree_consensus: float
    divisiveness: float = Field(description="Half the spread of the groups' net lean, [0, 1).")
    groups: list[GroupVotesOut]
    candidate: bool = Field(description="Every group agrees at least min_group_agreement.")
    divisive: bool = Field(description="divisiveness >= divisive_threshold.")


class ParticipantOut(BaseModel):
    id: str
    group: int | None
    x: float | None
    y: float | None
    n_votes: int


class AnalysisOut(BaseModel):
    public_input: str
    parameters: dict[str, Any]
    k: int
    groups: list[GroupOut]
    silhouettes: dict[str, float]
    explained_variance_ratio: list[float]
    grouped: int
    excluded: int
    statements: list[StatementOut] = Field(description="By consensus, highest first.")
    participants: list[ParticipantOut] | None = Field(
        default=None, description="With participants=true: each one's group and position."
    )


class WordingIn(_Strict):
    """A statement's principle texts as a person edited them; omitted ones are kept."""

    comparison: str | None = Field(default=None, min_length=1, max_length=4000)
    critique: str | None = Field(default=None, min_length=1, max_length=4000)
    revision: str | None = Field(default=None, min_length=1, max_length=4000)


class DraftRequest(AnalysisParameters):
    name: str = Field(pattern=CONSTITUTION_NAME, description="The constitution's name.")
    description: str = Field(default="", max_length=4000)
    statements: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="Statement ids to draft from, in this order; default: the candidates.",
    )
    min_group_agreement: float = Field(default=0.6, ge=0.0, le=1.0)
    max_divisiveness: float = Field(default=0.5, gt=0.0, le=1.0)
    max_statements: int = Field(default=64, ge=1, le=256)
    wording_job: str | None = Field(
        default=None,
        min_length=1,
        max_length=32,
        description="A completed wording job of this input: its answers word the principles.",
    )
    wording: dict[str, WordingIn] | None = Field(
        default=None,
        max_length=256,
        description="Statement id -> edited texts; they win over the wording job's and the "
        "templates'.",
    )


class WordingJobCreate(_Strict):
    constitution: str = Field(
        min_length=1,
        max_length=80,
        description="A constitution version drafted from this public input (name@version): "
        "its statements are worded, and the job runs under it.",
    )
    model: str = Field(
        default=BUILTIN_SMOLLM2,
        min_length=1,
        max_length=128,
        pattern=MODEL_PATTERN,
        description="The model that words the principles.",
    )
    seed: int | None = Field(default=None, ge=0, le=2**62)


class DraftPreview(BaseModel):
    constitution: dict[str, Any] = Field(
        description="The constitution document as it would be published; edit the wording "
        "with `wording`, or push an edited copy to POST /v1/constitutions."
    )
    statements: list[StatementOut]


class DraftOut(BaseModel):
    constitution: str = Field(description="The version published, name@version.")
    created: bool
    statements: list[StatementOut] = Field(description="The statements drafted from, in order.")
