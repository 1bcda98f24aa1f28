from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from sqlalchemy.orm import Session

from charter.core.jobs import RunStatus
from charter.db.models import TrainingRun
from services.gateway.deps import Cursor, Limit, ReadKey, SessionDep, SettingsDep, TrainKey
from services.gateway.pagination import Page
from services.gateway.runs import service
from services.gateway.runs.schemas import (
    CheckpointReport,
    Claimed,
    ClaimRequest,
    CompleteReport,
    FailReport,
    Lease,
    MetricOut,
    MetricsReport,
    RunCreate,
    RunOut,
)
from services.gateway.unit_of_work import UnitOfWorkRoute, mark_secret

router = APIRouter(prefix="/v1/runs", tags=["training runs"], route_class=UnitOfWorkRoute)


def _out(run: TrainingRun, dataset: str | None, metrics: dict[str, float] | None = None) -> RunOut:
    return RunOut(
        id=run.id,
        type=run.type,
        status=run.status,
        dataset=dataset,
        dataset_version_id=run.dataset_version_id,
        config=run.config,
        config_hash=run.config_hash,
        trained_config_hash=run.trained_config_hash,
        artifact_uri=run.artifact_uri,
        checkpoint=run.checkpoint,
        error=run.error,
        lease_owner=run.lease_owner,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        last_metrics=metrics,
    )


def _one(session: Session, run: TrainingRun, metrics: dict[str, float] | None = None) -> RunOut:
    return _out(run, service.dataset_refs(session, [run]).get(run.id), metrics)


@router.post("", response_model=RunOut, status_code=status.HTTP_201_CREATED)
def create_run(body: RunCreate, session: SessionDep, key: TrainKey) -> RunOut:
    return _one(session, service.create(session, key.project_id, body.root))


@router.get("", response_model=Page[RunOut])
def list_runs(
    session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 50
) -> Page[RunOut]:
    runs, next_cursor = service.page(session, key.project_id, cursor, limit)
    refs = service.dataset_refs(session, runs)
    return Page(items=[_out(r, refs.get(r.id)) for r in runs], next_cursor=next_cursor)


@router.get("/{run_id}", response_model=RunOut)
def get_run(run_id: str, session: SessionDep, key: ReadKey) -> RunOut:
    run = service.get(session, key.project_id, run_id)
    return _one(session, run, service.last_metrics(session, run.id))


@router.get("/{run_id}/metrics", response_model=Page[MetricOut])
def run_metrics(
    run_id: str, session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 1000
) -> Page[MetricOut]:
    run = service.get(session, key.project_id, run_id)
    rows, next_cursor = service.metrics_page(session, run.id, cursor, limit)
    return Page(items=[MetricOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post("/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: str, session: SessionDep, key: TrainKey) -> RunOut:
    run = service.get(session, key.project_id, run_id)
    service.cancel(run)
    return _one(session, run)


@router.post("/{run_id}/resume", response_model=RunOut)
def resume_run(run_id: str, session: SessionDep, key: TrainKey) -> RunOut:
    run = service.get(session, key.project_id, run_id)
    service.resume(run)
    return _one(session, run)


# The trainer's side: claim, heartbeat, report. Every report presents the claim's lease_token.


@router.post("/claim", response_model=Claimed, responses={204: {"description": "Nothing queued."}})
def claim_run(
    body: ClaimRequest,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: TrainKey,
) -> Claimed | Response:
    claimed = service.claim(
        session, key.project_id, body.owner, body.types, settings.run_lease_seconds
    )
    if claimed is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    run, token = claimed
    mark_secret(request, "lease_token")
    return Claimed(**_one(session, run).model_dump(), lease_token=token)


@router.post("/{run_id}/heartbeat", response_model=RunOut)
def heartbeat(
    run_id: str, body: Lease, session: SessionDep, settings: SettingsDep, key: TrainKey
) -> RunOut:
    run = service.held(session, key.project_id, run_id, body.lease_token)
    service.heartbeat(run, settings.run_lease_seconds)
    return _one(session, run)


@router.post("/{run_id}/metrics", status_code=status.HTTP_204_NO_CONTENT)
def report_metrics(
    run_id: str, body: MetricsReport, session: SessionDep, key: TrainKey
) -> Response:
    run = service.held(session, key.project_id, run_id, body.lease_token)
    service.add_metrics(session, run, body.points)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{run_id}/checkpoint", response_model=RunOut)
def report_checkpoint(
    run_id: str, body: CheckpointReport, session: SessionDep, settings: SettingsDep, key: TrainKey
) -> RunOut:
    run = service.held(session, key.project_id, run_id, body.lease_token)
    run.checkpoint = service.checkpoint_path(body.checkpoint, settings.artifacts_dir, run)
    return _one(session, run)


@router.post("/{run_id}/complete", response_model=RunOut)
def complete_run(
    run_id: str, body: CompleteReport, session: SessionDep, settings: SettingsDep, key: TrainKey
) -> RunOut:
    run = service.held(session, key.project_id, run_id, body.lease_token)
    uri = service.artifact_uri(body.artifact_uri, settings.artifacts_dir, run)
    service.trained_with(run, body.config_hash)
    service.finish(run, RunStatus.COMPLETED, artifact_uri=uri)
    return _one(session, run)


@router.post("/{run_id}/fail", response_model=RunOut)
def fail_run(run_id: str, body: FailReport, session: SessionDep, key: TrainKey) -> RunOut:
    run = service.held(session, key.project_id, run_id, body.lease_token)
    service.finish(run, RunStatus.FAILED, error=body.error)
    return _one(session, run)
