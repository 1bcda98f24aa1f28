"""Public inputs: statements and votes, versioned and hashed, and what is drawn from them.

A push parses the input strictly (every problem reported at once, by line and column)
and stores it as one immutable version; the same input as the latest version answers
that version. The analysis is a pure function of a version and its parameters
(:func:`charter.core.collective.analyse`, seeded), so it is computed when asked for,
never stored, and a constitution drafted from it records the parameters that reproduce it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from charter.core import collective, collective_drafting, refs
from charter.core.constitution import Constitution, canonical_json
from charter.core.public_input import (
    PublicInput,
    PublicInputError,
    Statement,
    parse_json,
    parse_polis_export,
    parse_votes_csv,
)
from charter.db.models import ConstitutionVersion, PublicInputSet
from charter.errors import CharterError, Invalid, NotFound
from services.gateway.constitutions import service as constitutions
from services.gateway.public_inputs.schemas import (
    NAME_PATTERN,
    AnalysisParameters,
    CsvUpload,
    DraftRequest,
    JsonUpload,
    PolisUpload,
    Upload,
)

MAX_VOTES = 5_000_000
"""Votes in one version: its matrix is built whole to be analysed."""


def parse(upload: Upload) -> PublicInput:
    """The upload's public input; a 422 naming every problem (up to 100) otherwise."""
    try:
        if isinstance(upload, JsonUpload):
            document = {"statements": upload.statements, "votes": upload.votes}
            return parse_json(json.dumps(document))
        if isinstance(upload, CsvUpload):
            return parse_votes_csv(upload.votes, upload.statements)
        assert isinstance(upload, PolisUpload)
        return parse_polis_export(upload.comments, upload.participants_votes)
    except PublicInputError as exc:
        first = exc.errors[0]
        source = {"json": "body", "participants-votes": "participants_votes"}.get(
            first.source, first.source
        )
        field = source if source == "body" else f"body.{source}"
        raise Invalid(str(exc), field=field) from exc
    except ValueError as exc:  # the core's own limits (statements, participants)
        raise Invalid(str(exc), field="body") from exc


def to_data(data: PublicInput) -> dict[str, Any]:
    """The stored form: statements, participants and the cast votes as index triples."""
    rows, cols = np.nonzero(~np.isnan(data.votes))
    return {
        "statements": [{"id": s.id, "text": s.text, "author": s.author} for s in data.statements],
        "participants": list(data.participants),
        "votes": [[int(i), int(j), int(data.votes[i, j])] for i, j in zip(rows, cols, strict=True)],
    }


def from_data(data: dict[str, Any]) -> PublicInput:
    statements = tuple(Statement(s["id"], s["text"], s.get("author")) for s in data["statements"])
    matrix = np.full((len(data["participants"]), len(statements)), np.nan)
    for i, j, vote in data["votes"]:
        matrix[i, j] = vote
    return PublicInput(statements, tuple(data["participants"]), matrix)


def _latest(session: Session, project_id: str, name: str) -> PublicInputSet | None:
    query = select(PublicInputSet).filter_by(project_id=project_id, name=name)
    return session.scalar(query.order_by(PublicInputSet.version.desc()).limit(1))


def push(
    session: Session, project_id: str, name: str, upload: Upload
) -> tuple[PublicInputSet, bool]:
    """A new version of ``name`` holding the upload, or the latest when it holds the same."""
    data = to_data(parse(upload))
    if len(data["votes"]) > MAX_VOTES:
        raise Invalid(
            f"the input holds {len(data['votes'])} votes; at most {MAX_VOTES} in one version",
            field="body",
        )
    digest = hashlib.sha256(canonical_json(data).encode()).hexdigest()
    latest = _latest(session, project_id, name)
    if latest is not None and latest.content_hash == digest:
        return latest, False
    row = PublicInputSet(
        project_id=project_id,
        name=name,
        version=1 if latest is None else latest.version + 1,
        source_format=upload.format,
        statement_count=len(data["statements"]),
        participant_count=len(data["participants"]),
        vote_count=len(data["votes"]),
        content_hash=digest,
        data=data,
    )
    session.add(row)
    session.flush()
    return row, True


def resolve(
    session: Session,
    project_id: str,
    ref: str,
    *,
    field: str = "ref",
    malformed: type[CharterError] = NotFound,
) -> PublicInputSet:
    """``name`` (the latest version) or ``name@version`` of the project's public inputs."""
    try:
        name, version = refs.parse_ref(ref, NAME_PATTERN, what="public input")
    except ValueError as exc:
        raise malformed(str(exc), field=field) from exc
    if version is None:
        row = _latest(session, project_id, name)
    else:
        query = select(PublicInputSet).filter_by(project_id=project_id, name=name, version=version)
        row = session.scalar(query)
    if row is None:
        raise NotFound(f"public input {ref!r} not found", field=field)
    return row


def listing(session: Session, project_id: str) -> Sequence[PublicInputSet]:
    """Every version of every public input of the project, by name then version."""
    query = select(PublicInputSet).where(PublicInputSet.project_id == project_id)
    query = query.order_by(PublicInputSet.name, PublicInputSet.version)
    return session.scalars(query.options(defer(PublicInputSet.data))).all()  # megabytes each


def analyse(row: PublicInputSet, parameters: AnalysisParameters) -> collective.Analysis:
    try:
        return collective.analyse(
            from_data(row.data),
            min_votes=parameters.min_votes,
            max_groups=parameters.max_groups,
            seed=parameters.seed,
        )
    except collective.AnalysisError as exc:
        raise Invalid(str(exc), field="min_votes") from exc


def ref_of(row: PublicInputSet) -> str:
    return f"{row.name}@{row.version}"


def select_statements(
    analysis: collective.Analysis, request: DraftRequest
) -> list[collective.StatementResult]:
    """The named statements in the order given, else the candidates (every group agrees
    at least ``min_group_agreement``, none divisive), highest consensus first."""
    if request.statements is not None:
        by_id = {s.id: s for s in analysis.statements}
        unknown = [sid for sid in request.statements if sid not in by_id]
        if unknown:
            raise Invalid(
                f"not statements of this public input: {', '.join(map(repr, unknown[:10]))}",
                field="statements",
            )
        return [by_id[sid] for sid in request.statements]
    chosen = [
        s
        for s in collective.candidates(analysis, min_group_agreement=request.min_group_agreement)
        if s.divisiveness < request.max_divisiveness
    ][: request.max_statements]
    if not chosen:
        raise Invalid(
            f"no statement has every group's agreement at or above "
            f"{request.min_group_agreement} and divisiveness below {request.max_divisiveness}: "
            "lower min_group_agreement, or name the statements",
            field="min_group_agreement",
        )
    return chosen


def draft(
    row: PublicInputSet, request: DraftRequest
) -> tuple[Constitution, list[collective.StatementResult]]:
    analysis = analyse(row, request)
    chosen = select_statements(analysis, request)
    parameters = request.model_dump(mode="json", exclude={"name", "description"})
    source = collective_drafting.Source(
        ref_of(row), row.content_hash, row.participant_count, row.statement_count
    )
    try:
        constitution = collective_drafting.draft(
            request.name, chosen, analysis, source, parameters=parameters,
            description=request.description,
        )  # fmt: skip
    except ValueError as exc:  # a statement too long to be a principle
        raise Invalid(f"the drafted constitution is not valid: {exc}", field="statements") from exc
    return constitution, chosen


def publish(
    session: Session, project_id: str, row: PublicInputSet, request: DraftRequest, max_bytes: int
) -> tuple[ConstitutionVersion, bool, list[collective.StatementResult]]:
    constitution, chosen = draft(row, request)
    constitutions.validate(constitution.model_dump(mode="json"), max_bytes=max_bytes)
    version, created = constitutions.push(session, project_id, constitution)
    return version, created, chosen
