"""Public inputs: statements and votes, versioned and hashed, and what is drawn from them.

A push parses the input strictly (every problem reported at once, by line and column)
and stores it as one immutable version; the same input as the latest version answers
that version. The analysis is a pure function of a version and its parameters
(:func:`charter.core.collective.analyse`, seeded), so it is computed when asked for,
never stored, and a constitution drafted from it records the parameters that reproduce it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from charter.core import collective, collective_drafting
from charter.core.constitution import Constitution, canonical_json
from charter.core.jobs import JobType
from charter.core.public_input import (
    PublicInput,
    PublicInputError,
    Statement,
    parse_json,
    parse_polis_export,
    parse_votes_csv,
)
from charter.db.models import ConstitutionVersion, Job, PromptBatch, PublicInputSet
from charter.errors import CharterError, Conflict, Invalid, NotFound
from services.gateway import versioned
from services.gateway.batches import service as batches
from services.gateway.constitutions import service as constitutions
from services.gateway.jobs import service as jobs
from services.gateway.jobs.schemas import JobCreate
from services.gateway.public_inputs.schemas import (
    NAME_PATTERN,
    AnalysisParameters,
    CsvUpload,
    DraftRequest,
    JsonUpload,
    PolisUpload,
    Upload,
    WordingJobCreate,
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


def _pack(values: np.ndarray, dtype: str) -> str:
    return base64.b64encode(values.astype(dtype).tobytes()).decode("ascii")


def _unpack(text: str, dtype: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


def to_data(data: PublicInput) -> dict[str, Any]:
    """The stored form: statements, participants, and the cast votes as three packed
    little-endian arrays (participant index, statement index, vote), base64 in JSON: a
    million votes are 9 MB and load in milliseconds, where JSON triples would be 17 MB and
    seconds of Python objects."""
    rows, cols = np.nonzero(~np.isnan(data.votes))
    return {
        "statements": [{"id": s.id, "text": s.text, "author": s.author} for s in data.statements],
        "participants": list(data.participants),
        "votes": {
            "participant": _pack(rows, "<u4"),
            "statement": _pack(cols, "<u2"),
            "vote": _pack(data.votes[rows, cols], "i1"),
        },
    }


def from_data(data: dict[str, Any]) -> PublicInput:
    statements = tuple(Statement(s["id"], s["text"], s.get("author")) for s in data["statements"])
    matrix = np.full((len(data["participants"]), len(statements)), np.nan)
    votes = data["votes"]
    rows, cols = _unpack(votes["participant"], "<u4"), _unpack(votes["statement"], "<u2")
    matrix[rows, cols] = _unpack(votes["vote"], "i1")
    return PublicInput(statements, tuple(data["participants"]), matrix)


def push(
    session: Session, project_id: str, name: str, upload: Upload
) -> tuple[PublicInputSet, bool]:
    """A new version of ``name`` holding the upload, or the latest when it holds the same."""
    parsed = parse(upload)
    cast = int((~np.isnan(parsed.votes)).sum())
    if cast > MAX_VOTES:
        raise Invalid(
            f"the input holds {cast} votes; at most {MAX_VOTES} in one version", field="body"
        )
    data = to_data(parsed)
    digest = hashlib.sha256(canonical_json(data).encode()).hexdigest()
    latest = versioned.latest(session, PublicInputSet, project_id, name)
    if latest is not None and latest.content_hash == digest:
        return latest, False
    row = PublicInputSet(
        project_id=project_id,
        name=name,
        version=1 if latest is None else latest.version + 1,
        source_format=upload.format,
        statement_count=len(data["statements"]),
        participant_count=len(data["participants"]),
        vote_count=cast,
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
    return versioned.resolve(
        session, PublicInputSet, project_id, ref, name_pattern=NAME_PATTERN, what="public input",
        field=field, malformed=malformed,
    )  # fmt: skip


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


def provenance_of(content: dict[str, Any], row: PublicInputSet) -> dict[str, Any] | None:
    """The collective provenance of a constitution's content when it was drafted from
    ``row``, else None."""
    provenance = (content.get("metadata") or {}).get("provenance")
    if not isinstance(provenance, dict) or provenance.get("kind") != "collective":
        return None
    return provenance if provenance.get("public_input") == ref_of(row) else None


WORDING_BATCH = "wording:"


def submit_wording_job(
    session: Session, project_id: str, row: PublicInputSet, body: WordingJobCreate, settings: Any
) -> Job:
    """A ``generate`` job under the drafted constitution ``body.constitution`` whose
    prompts ask the model to word each of its statements (see
    :func:`charter.core.collective_drafting.wording_prompts`)."""
    version = constitutions.resolve(session, project_id, body.constitution, field="constitution")
    provenance = provenance_of(version.content, row)
    if provenance is None:
        raise Invalid(
            f"{body.constitution} was not drafted from {ref_of(row)}: publish a draft from it "
            "first (POST /v1/public-inputs/{ref}/constitution)",
            field="constitution",
        )
    texts = [p["statement"] for p in provenance["principles"]]
    ref = f"{constitutions.name_of(session, version)}@{version.version}"
    batch = batches.create(
        session,
        project_id,
        f"{WORDING_BATCH}{ref}",
        ((prompt, None, None, None, None) for prompt in collective_drafting.wording_prompts(texts)),
    )
    spec = JobCreate(
        type=JobType.GENERATE, batch_id=batch.id, constitution=ref, model=body.model,
        seed=body.seed,
    )  # fmt: skip
    return jobs.submit(session, project_id, spec, settings)


def wording_of_job(
    session: Session, project_id: str, row: PublicInputSet, job_id: str
) -> dict[str, collective_drafting.Wording]:
    """What a finished wording job of ``row`` suggests, by statement id."""
    job = jobs.get(session, project_id, job_id)
    version = session.get_one(ConstitutionVersion, job.constitution_version_id)
    provenance = provenance_of(version.content, row)
    batch = session.get_one(PromptBatch, job.batch_id)
    if (
        job.type != JobType.GENERATE
        or provenance is None
        or not batch.name.startswith(WORDING_BATCH)
    ):
        raise Invalid(f"job {job_id!r} is no wording job of {ref_of(row)}", field="wording_job")
    if job.finished_at is None:
        raise Conflict(f"wording job {job_id!r} has not finished yet", field="wording_job")
    statement_ids = [p["statement_id"] for p in provenance["principles"]]
    answers = jobs.completions(session, job.id)
    return collective_drafting.wording_from_completions(
        statement_ids, {position: text for position, (_, text) in answers.items()}
    )


def draft(
    session: Session, project_id: str, row: PublicInputSet, request: DraftRequest
) -> tuple[Constitution, list[collective.StatementResult]]:
    analysis = analyse(row, request)
    chosen = select_statements(analysis, request)
    suggested = (
        wording_of_job(session, project_id, row, request.wording_job)
        if request.wording_job is not None
        else {}
    )
    edits = {
        sid: collective_drafting.Wording(**w.model_dump())
        for sid, w in (request.wording or {}).items()
    }
    unknown = sorted(set(edits) - {s.id for s in chosen})
    if unknown:
        raise Invalid(
            f"wording for statements the draft does not hold: {', '.join(map(repr, unknown[:10]))}",
            field="wording",
        )
    parameters = request.model_dump(mode="json", exclude={"name", "description", "wording"})
    source = collective_drafting.Source(
        ref_of(row), row.content_hash, row.participant_count, row.statement_count
    )
    try:
        constitution = collective_drafting.draft(
            request.name, chosen, analysis, source, parameters=parameters,
            description=request.description, suggested=suggested, edits=edits,
        )  # fmt: skip
    except ValueError as exc:  # a statement too long to be a principle
        raise Invalid(f"the drafted constitution is not valid: {exc}", field="statements") from exc
    return constitution, chosen


def publish(
    session: Session, project_id: str, row: PublicInputSet, request: DraftRequest, max_bytes: int
) -> tuple[ConstitutionVersion, bool, list[collective.StatementResult]]:
    constitution, chosen = draft(session, project_id, row, request)
    constitutions.validate(constitution.model_dump(mode="json"), max_bytes=max_bytes)
    version, created = constitutions.push(session, project_id, constitution)
    return version, created, chosen
