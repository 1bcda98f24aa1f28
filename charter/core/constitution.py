"""Constitution schema, canonical form, content hash and version diff.

Pure domain code: no I/O. A constitution is validated here, canonicalised to
one JSON text (sorted keys, no insignificant whitespace) and hashed, so that
identical content always maps to the same stored version whatever the key order
or YAML formatting of the document that carried it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from charter.core import refs

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
PRINCIPLE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
MAX_VERSION = 999_999_999
_NAME = re.compile(NAME_PATTERN)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class CritiquePrinciple(_Strict):
    """An SL-CAI principle: a critique request paired with its revision request."""

    id: str = Field(pattern=PRINCIPLE_ID_PATTERN)
    critique: str = Field(min_length=1, max_length=4000)
    revision: str = Field(min_length=1, max_length=4000)


class ComparisonPrinciple(_Strict):
    """An RL-CAI principle: the question the feedback model answers with (A) or (B)."""

    id: str = Field(pattern=PRINCIPLE_ID_PATTERN)
    text: str = Field(min_length=1, max_length=4000)


class CritiqueExample(_Strict):
    """A worked critique/revision round shown to the model before the real one."""

    prompt: str = Field(min_length=1, max_length=8000)
    response: str = Field(min_length=1, max_length=8000)
    critique_request: str = Field(min_length=1, max_length=4000)
    critique: str = Field(min_length=1, max_length=8000)
    revision_request: str = Field(min_length=1, max_length=4000)
    revision: str = Field(min_length=1, max_length=8000)


class ComparisonExample(_Strict):
    """A worked comparison: the answer letter the feedback model should give."""

    prompt: str = Field(min_length=1, max_length=8000)
    response_a: str = Field(min_length=1, max_length=8000)
    response_b: str = Field(min_length=1, max_length=8000)
    principle: str = Field(min_length=1, max_length=4000)
    answer: str = Field(pattern=r"^[AB]$")
    reasoning: str | None = Field(default=None, max_length=8000)


class ClassifierCategory(_Strict):
    """A category of content for constitutional classifiers (Sharma et al. 2025): what is
    restricted (a classifier flags it) or explicitly allowed (it must not be flagged)."""

    id: str = Field(pattern=PRINCIPLE_ID_PATTERN)
    kind: Literal["restricted", "allowed"]
    description: str = Field(min_length=1, max_length=4000)
    examples: tuple[str, ...] = Field(default=(), max_length=32)

    @field_validator("examples")
    @classmethod
    def _examples(cls, examples: tuple[str, ...]) -> tuple[str, ...]:
        stripped = tuple(e.strip() for e in examples)
        if any(not e or len(e) > 4000 for e in stripped):
            raise ValueError("an example is 1-4000 characters")
        return stripped


class ClassifierSection(_Strict):
    """The categories input/output classifiers are trained on, and the score at which a
    deployed classifier blocks."""

    categories: tuple[ClassifierCategory, ...] = Field(min_length=2, max_length=64)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)

    @field_validator("categories")
    @classmethod
    def _categories(
        cls, categories: tuple[ClassifierCategory, ...]
    ) -> tuple[ClassifierCategory, ...]:
        ids = [c.id for c in categories]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate category ids: {', '.join(duplicates)}")
        kinds = {c.kind for c in categories}
        if kinds != {"restricted", "allowed"}:
            raise ValueError("a classifier section needs restricted and allowed categories both")
        return categories

    @property
    def restricted(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.categories if c.kind == "restricted")


class Constitution(_Strict):
    """A written constitution: the two principle sets of Bai et al. (2022), and optionally
    the categories of its classifiers."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=4000)
    critique_principles: tuple[CritiquePrinciple, ...] = Field(default=(), max_length=256)
    comparison_principles: tuple[ComparisonPrinciple, ...] = Field(default=(), max_length=256)
    critique_examples: tuple[CritiqueExample, ...] = Field(default=(), max_length=32)
    comparison_examples: tuple[ComparisonExample, ...] = Field(default=(), max_length=32)
    classifier: ClassifierSection | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("critique_principles", "comparison_principles")
    @classmethod
    def _unique_ids(cls, principles: tuple[Any, ...]) -> tuple[Any, ...]:
        ids = [p.id for p in principles]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate principle ids: {', '.join(duplicates)}")
        return principles

    @model_validator(mode="after")
    def _not_empty(self) -> Constitution:
        if not (self.critique_principles or self.comparison_principles or self.classifier):
            raise ValueError(
                "a constitution needs at least one critique or comparison principle, or a "
                "classifier section"
            )
        return self

    def canonical_json(self) -> str:
        return canonical_json(self.content())

    def content(self) -> dict[str, Any]:
        """The stored JSON form. A constitution without classifiers has no ``classifier``
        key, so versions stored before the section existed keep their hashes."""
        return self.model_dump(
            mode="json", exclude={"classifier"} if self.classifier is None else None
        )

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def critique_principle(self, principle_id: str) -> CritiquePrinciple:
        return _by_id(self.critique_principles, principle_id)

    def comparison_principle(self, principle_id: str) -> ComparisonPrinciple:
        return _by_id(self.comparison_principles, principle_id)


_P = TypeVar("_P", CritiquePrinciple, ComparisonPrinciple)


def _by_id(principles: tuple[_P, ...], principle_id: str) -> _P:
    for p in principles:
        if p.id == principle_id:
            return p
    raise KeyError(principle_id)


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, compact separators, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_ref(ref: str) -> tuple[str, int | None]:
    """Split ``name@version`` (version optional) into its parts (see :mod:`.refs`)."""
    return refs.parse_ref(ref, _NAME, what="constitution")


class PrincipleChange(BaseModel):
    id: str
    before: dict[str, Any]
    after: dict[str, Any]


class PrincipleSetDiff(BaseModel):
    added: list[dict[str, Any]] = []
    removed: list[dict[str, Any]] = []
    changed: list[PrincipleChange] = []


class ConstitutionDiff(BaseModel):
    critique_principles: PrincipleSetDiff
    comparison_principles: PrincipleSetDiff
    description_changed: bool
    examples_changed: bool
    classifier_changed: bool = False
    metadata_changed: bool

    @property
    def empty(self) -> bool:
        sets = (self.critique_principles, self.comparison_principles)
        return not (
            any(s.added or s.removed or s.changed for s in sets)
            or self.description_changed
            or self.examples_changed
            or self.classifier_changed
            or self.metadata_changed
        )


def _diff_set(before: tuple[Any, ...], after: tuple[Any, ...]) -> PrincipleSetDiff:
    old = {p.id: p.model_dump(mode="json") for p in before}
    new = {p.id: p.model_dump(mode="json") for p in after}
    return PrincipleSetDiff(
        added=[new[i] for i in new if i not in old],
        removed=[old[i] for i in old if i not in new],
        changed=[
            PrincipleChange(id=i, before=old[i], after=new[i])
            for i in new
            if i in old and old[i] != new[i]
        ],
    )


def diff(before: Constitution, after: Constitution) -> ConstitutionDiff:
    """Principles added, removed and changed (matched by id) between two versions."""
    return ConstitutionDiff(
        critique_principles=_diff_set(before.critique_principles, after.critique_principles),
        comparison_principles=_diff_set(before.comparison_principles, after.comparison_principles),
        description_changed=before.description != after.description,
        examples_changed=(
            before.critique_examples != after.critique_examples
            or before.comparison_examples != after.comparison_examples
        ),
        classifier_changed=before.classifier != after.classifier,
        metadata_changed=before.metadata != after.metadata,
    )
