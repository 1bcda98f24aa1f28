"""A constitution drafted from the statements the public agreed on. Pure.

Collective Constitutional AI (Huang et al. 2024) kept the statements every opinion group
agreed with and turned each into a principle. Here each selected statement becomes one
comparison principle (RL-CAI: which response better follows it) and one critique/revision
pair (SL-CAI: where the last response falls short of it, then a rewrite), worded by
templates that quote the statement verbatim, so the public's words reach the feedback
model unedited. The constitution's ``metadata.provenance`` records where each principle
came from: the public input's version and hash, the analysis parameters, and each
statement's per-group agreement, so a label can be traced to the votes behind it.

The wording can be the model's: :func:`wording_prompts` asks a model, as an ordinary
``generate`` job, to word each statement three ways; :func:`wording_from_completions`
reads its answers back; a person may then edit any of them before publishing. Each
principle's provenance says whose wording it carries (``template``, ``model`` or
``edited``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from charter.core.collective import Analysis, StatementResult
from charter.core.constitution import (
    ComparisonPrinciple,
    Constitution,
    CritiquePrinciple,
)

COMPARISON_TEMPLATE = (
    "Which of these assistant responses better follows this principle, which the public "
    'agreed on: "{statement}"?'
)
CRITIQUE_TEMPLATE = (
    "Identify specific ways in which the assistant's last response does not follow this "
    'principle, which the public agreed on: "{statement}"'
)
REVISION_TEMPLATE = (
    'Rewrite the assistant\'s response so that it follows this principle: "{statement}", '
    "keeping whatever in it was helpful."
)
KINDS: tuple[WordingKind, ...] = ("comparison", "critique", "revision")
WORDING_REQUESTS: dict[str, str] = {
    "comparison": "Rewrite the statement below as one question that asks which of two AI "
    "assistant responses better follows it. Keep its meaning exactly. Answer with the question "
    "only.",
    "critique": "Rewrite the statement below as one instruction to point out every way in which "
    "an AI assistant's last response fails to follow it. Keep its meaning exactly. Answer with "
    "the instruction only.",
    "revision": "Rewrite the statement below as one instruction to rewrite an AI assistant's "
    "response so that it follows the statement. Keep its meaning exactly. Answer with the "
    "instruction only.",
}
MAX_WORDING_CHARS = 4000  # a principle's text limit
_SLUG = re.compile(r"[^a-z0-9_-]+")
_ID_BUDGET = 56  # PRINCIPLE_ID_PATTERN allows 63 characters; room for "public-" and a suffix


WordingKind = Literal["comparison", "critique", "revision"]
WordingOrigin = Literal["template", "model", "edited"]


@dataclass(frozen=True)
class Wording:
    """One statement's principle texts; None keeps the template's."""

    comparison: str | None = None
    critique: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class Source:
    """The public input the statements come from, as the provenance names it."""

    ref: str
    content_hash: str
    participants: int
    statements: int


def principle_id(statement_id: str, taken: set[str]) -> str:
    """``public-<statement id>`` made a valid, unused principle id."""
    slug = _SLUG.sub("-", statement_id.lower()).strip("-_")[:_ID_BUDGET] or "statement"
    candidate, suffix = f"public-{slug}", 2
    while candidate in taken:
        candidate, suffix = f"public-{slug}-{suffix}", suffix + 1
    taken.add(candidate)
    return candidate


def _quoted(text: str) -> str:
    """The statement on one line, with its double quotes made single: it is quoted."""
    return " ".join(text.split()).replace('"', "'")


def wording_prompts(statements: Sequence[str]) -> list[str]:
    """The prompts of a wording job: for each statement, in order, one per :data:`KINDS`."""
    return [
        f"{WORDING_REQUESTS[kind]}\n\nStatement: {_quoted(text)}"
        for text in statements
        for kind in KINDS
    ]


def _clean(completion: str | None) -> str | None:
    """A model's answer as a principle text: its first paragraph, unquoted; None when
    nothing usable is left (the template is kept)."""
    if completion is None:
        return None
    text = " ".join(completion.strip().split("\n\n", 1)[0].split()).strip("\"'` ")
    return text[:MAX_WORDING_CHARS] or None


def wording_from_completions(
    statement_ids: Sequence[str], completions: Mapping[int, str | None]
) -> dict[str, Wording]:
    """Each statement's wording from a wording job's answers, by prompt position
    (:func:`wording_prompts`' order); a missing or empty answer keeps the template."""
    return {
        sid: Wording(
            **{
                kind: _clean(completions.get(index * len(KINDS) + k))
                for k, kind in enumerate(KINDS)
            }
        )
        for index, sid in enumerate(statement_ids)
    }


def _merge(base: Wording | None, edits: Wording | None) -> tuple[Wording, dict[str, WordingOrigin]]:
    merged, origin = Wording(), dict[str, WordingOrigin]()
    for kind in KINDS:
        edited, suggested = getattr(edits or Wording(), kind), getattr(base or Wording(), kind)
        text = edited or suggested
        merged = replace(merged, **{kind: text})
        origin[kind] = "edited" if edited else "model" if suggested else "template"
    return merged, origin


def draft(
    name: str,
    statements: Sequence[StatementResult],
    analysis: Analysis,
    source: Source,
    *,
    parameters: dict[str, Any],
    description: str = "",
    suggested: Mapping[str, Wording] | None = None,
    edits: Mapping[str, Wording] | None = None,
) -> Constitution:
    """The constitution of ``statements`` (in the given order), with their provenance.
    A statement's texts are its ``edits``, else its ``suggested`` (a wording job's)
    texts, else the templates'.

    Raises ``ValueError`` (pydantic's) when the result is no valid constitution, e.g. no
    statement given or a statement too long for a principle."""
    taken: set[str] = set()
    ids = [principle_id(s.id, taken) for s in statements]
    wordings = [_merge((suggested or {}).get(s.id), (edits or {}).get(s.id)) for s in statements]
    comparison = tuple(
        ComparisonPrinciple(
            id=pid,
            text=w.comparison or COMPARISON_TEMPLATE.format(statement=_quoted(s.text)),
        )
        for pid, s, (w, _) in zip(ids, statements, wordings, strict=True)
    )
    critique = tuple(
        CritiquePrinciple(
            id=pid,
            critique=w.critique or CRITIQUE_TEMPLATE.format(statement=_quoted(s.text)),
            revision=w.revision or REVISION_TEMPLATE.format(statement=_quoted(s.text)),
        )
        for pid, s, (w, _) in zip(ids, statements, wordings, strict=True)
    )
    provenance = {
        "kind": "collective",
        "public_input": source.ref,
        "content_hash": source.content_hash,
        "participants": source.participants,
        "statements_in_input": source.statements,
        "parameters": parameters,
        "groups": [{"index": g.index, "size": g.size} for g in analysis.groups],
        "principles": [
            {
                "principle_id": pid,
                "statement_id": s.id,
                "statement": s.text,
                "consensus": round(s.consensus, 6),
                "divisiveness": round(s.divisiveness, 6),
                "group_agreement": [round(g.p_agree, 6) for g in s.groups],
                "votes": [
                    {"agree": g.agree, "disagree": g.disagree, "passed": g.passed, "seen": g.seen}
                    for g in s.groups
                ],
                "wording": origin,
            }
            for pid, s, (_, origin) in zip(ids, statements, wordings, strict=True)
        ],
    }
    return Constitution(
        name=name,
        description=description
        or f"Drafted from {source.ref}: {len(statements)} statement(s) every opinion group "
        "agreed with.",
        critique_principles=critique,
        comparison_principles=comparison,
        metadata={"provenance": provenance},
    )
