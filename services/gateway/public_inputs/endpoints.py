"""``/v1/public-inputs``: statements and votes, their opinion groups, and the collective
constitution drafted from what every group agreed on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status

from charter.core import collective
from charter.db.models import PublicInputSet
from services.gateway.deps import ReadKey, SessionDep, SettingsDep, SubmitKey
from services.gateway.jobs.endpoints import queued
from services.gateway.jobs.schemas import JobOut
from services.gateway.public_inputs import service
from services.gateway.public_inputs.schemas import (
    NAME_PATTERN,
    AnalysisOut,
    AnalysisParameters,
    AnalysisQuery,
    DraftOut,
    DraftPreview,
    DraftRequest,
    GroupOut,
    GroupVotesOut,
    ParticipantOut,
    PublicInputOut,
    StatementOut,
    Upload,
    WordingJobCreate,
)
from services.gateway.unit_of_work import UnitOfWorkRoute

router = APIRouter(prefix="/v1/public-inputs", tags=["collective"], route_class=UnitOfWorkRoute)


def out(row: PublicInputSet, created: bool | None = None) -> PublicInputOut:
    return PublicInputOut(
        id=row.id, name=row.name, version=row.version, ref=service.ref_of(row),
        source_format=row.source_format, statement_count=row.statement_count,
        participant_count=row.participant_count, vote_count=row.vote_count,
        content_hash=row.content_hash, created_at=row.created_at, created=created,
    )  # fmt: skip


def statement_out(
    s: collective.StatementResult, *, min_group_agreement: float, divisive_threshold: float
) -> StatementOut:
    return StatementOut(
        id=s.id,
        text=s.text,
        consensus=s.consensus,
        disagree_consensus=s.disagree_consensus,
        divisiveness=s.divisiveness,
        groups=[GroupVotesOut(**vars(g)) for g in s.groups],
        candidate=all(g.p_agree >= min_group_agreement for g in s.groups),
        divisive=s.divisiveness >= divisive_threshold,
    )


def analysis_out(
    row: PublicInputSet,
    analysis: collective.Analysis,
    query: AnalysisQuery,
) -> AnalysisOut:
    return AnalysisOut(
        public_input=service.ref_of(row),
        parameters=AnalysisParameters.model_validate(query, from_attributes=True).model_dump(),
        k=analysis.k,
        groups=[GroupOut(**vars(g)) for g in analysis.groups],
        silhouettes={str(k): v for k, v in analysis.silhouettes.items()},
        explained_variance_ratio=list(analysis.explained_variance_ratio),
        grouped=len(analysis.participants) - len(analysis.excluded),
        excluded=len(analysis.excluded),
        statements=[
            statement_out(
                s,
                min_group_agreement=query.min_group_agreement,
                divisive_threshold=query.divisive_threshold,
            )
            for s in collective.consensus_ranking(analysis)
        ],
        participants=[ParticipantOut(**vars(p)) for p in analysis.participants]
        if query.participants
        else None,
    )


@router.post(
    "/{name}",
    response_model=PublicInputOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": PublicInputOut, "description": "Unchanged: the latest version."}},
    summary="Push statements and votes (JSON, a votes CSV with its statements CSV, or a Polis "
    "export)",
    description="A new version when the input differs from the latest version of `name` (201), "
    "else the latest itself (200, `created: false`). Every problem is reported at once, by file, "
    "line and column; nothing is stored unless all of it parses.",
)
def push_public_input(
    upload: Upload,
    response: Response,
    session: SessionDep,
    key: SubmitKey,
    name: str = Path(pattern=f"^{NAME_PATTERN}$"),
) -> PublicInputOut:
    row, created = service.push(session, key.project_id, name, upload)
    if not created:
        response.status_code = status.HTTP_200_OK
    return out(row, created)


@router.get("", response_model=list[PublicInputOut])
def list_public_inputs(session: SessionDep, key: ReadKey) -> list[PublicInputOut]:
    """Every version of every public input, by name then version."""
    return [out(row) for row in service.listing(session, key.project_id)]


@router.get("/{ref}", response_model=PublicInputOut)
def get_public_input(ref: str, session: SessionDep, key: ReadKey) -> PublicInputOut:
    """``name`` (the latest version) or ``name@version``."""
    return out(service.resolve(session, key.project_id, ref))


@router.get(
    "/{ref}/analysis",
    response_model=AnalysisOut,
    summary="Opinion groups, and each statement's consensus and divisiveness across them",
    description="PCA of the vote matrix, k-means with the best-silhouette k, then each "
    "statement's agreement per group (docs/COLLECTIVE.md). Deterministic for given parameters.",
)
def analyse_public_input(
    ref: str,
    session: SessionDep,
    key: ReadKey,
    query: Annotated[AnalysisQuery, Query()],
) -> AnalysisOut:
    row = service.resolve(session, key.project_id, ref)
    return analysis_out(row, service.analyse(row, query), query)


@router.post(
    "/{ref}/draft",
    response_model=DraftPreview,
    summary="Preview the constitution a publish would make, to review and edit; stores nothing",
)
def draft_collective_constitution(
    ref: str, request: DraftRequest, session: SessionDep, key: SubmitKey
) -> DraftPreview:
    row = service.resolve(session, key.project_id, ref)
    constitution, chosen = service.draft(session, key.project_id, row, request)
    return DraftPreview(
        constitution=constitution.model_dump(mode="json"),
        statements=[_chosen_out(s, request) for s in chosen],
    )


@router.post(
    "/{ref}/wording-jobs",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Ask a model to word a drafted constitution's statements as principles (a "
    "generate job)",
    description="Three prompts per statement (comparison, critique, revision wording) as an "
    "ordinary `generate` job under the drafted constitution; once it has finished, pass its id "
    "as `wording_job` to the draft and publish routes, and edit what it wrote with `wording`.",
)
def create_wording_job(
    ref: str,
    body: WordingJobCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: SubmitKey,
) -> JobOut:
    row = service.resolve(session, key.project_id, ref)
    return queued(request, service.submit_wording_job(session, key.project_id, row, body, settings))


@router.post(
    "/{ref}/constitution",
    response_model=DraftOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": DraftOut, "description": "Unchanged: that version exists."}},
    summary="Publish a constitution version drafted from the statements every group agreed on",
    description="Each statement becomes a comparison principle and a critique/revision pair "
    "quoting it; `metadata.provenance` names the public input, the parameters and each "
    "statement's per-group agreement. Default statements: the candidates, highest consensus "
    "first.",
)
def publish_collective_constitution(
    ref: str,
    request: DraftRequest,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    key: SubmitKey,
) -> DraftOut:
    row = service.resolve(session, key.project_id, ref)
    version, created, chosen = service.publish(
        session, key.project_id, row, request, settings.max_constitution_bytes
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return DraftOut(
        constitution=f"{request.name}@{version.version}",
        created=created,
        statements=[_chosen_out(s, request) for s in chosen],
    )


def _chosen_out(s: collective.StatementResult, request: DraftRequest) -> StatementOut:
    return statement_out(
        s,
        min_group_agreement=request.min_group_agreement,
        divisive_threshold=request.max_divisiveness,
    )
