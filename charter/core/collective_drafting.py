"""A constitution drafted from the statements the public agreed on. Pure.

Collective Constitutional AI (Huang et al. 2024) kept the statements every opinion group
agreed with and turned each into a principle. Here each selected statement becomes one
comparison principle (RL-CAI: which response better follows it) and one critique/revision
pair (SL-CAI: where the last response falls short of it, then a rewrite), worded by
templates that quote the statement verbatim, so the public's words reach the feedback
model unedited. The constitution's ``metadata.provenance`` records where each principle
came from: the public input's version and hash, the analysis parameters, and each
statement's per-group agreement, so a label can be traced to the votes behind it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
_SLUG = re.compile(r"[^a-z0-9_-]+")
_ID_BUDGET = 56  # PRINCIPLE_ID_PATTERN allows 63 characters; room for "public-" and a suffix


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


def draft(
    name: str,
    statements: Sequence[StatementResult],
    analysis: Analysis,
    source: Source,
    *,
    parameters: dict[str, Any],
    description: str = "",
) -> Constitution:
    """The constitution of ``statements`` (in the given order), with their provenance.

    Raises ``ValueError`` (pydantic's) when the result is no valid constitution, e.g. no
    statement given or a statement too long for a principle."""
    taken: set[str] = set()
    ids = [principle_id(s.id, taken) for s in statements]
    comparison = tuple(
        ComparisonPrinciple(id=pid, text=COMPARISON_TEMPLATE.format(statement=_quoted(s.text)))
        for pid, s in zip(ids, statements, strict=True)
    )
    critique = tuple(
        CritiquePrinciple(
            id=pid,
            critique=CRITIQUE_TEMPLATE.format(statement=_quoted(s.text)),
            revision=REVISION_TEMPLATE.format(statement=_quoted(s.text)),
        )
        for pid, s in zip(ids, statements, strict=True)
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
            }
            for pid, s in zip(ids, statements, strict=True)
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
