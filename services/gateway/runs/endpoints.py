from __future__ import annotations

from fastapi import APIRouter, Response, status
from sqlalchemy import select

from charter.db.models import RunMetric, TrainingRun
from services.gateway.deps import Cursor, Limit, ReadKey, SessionDep, SettingsDep, TrainKey
from services.gateway.pagination import Page, id_page, keyset
from services.gateway.routing import UnitOfWorkRoute
from services.gateway.runs import service
from services.gateway.runs.schemas import (
    CheckpointReport,
    ClaimRequest,
    CompleteReport,
    FailReport,
    Lease,
    MetricOut,
    MetricsReport,
    RunCreate,
    RunOut,
)

router = APIRouter(prefix="/v1/runs", tags=["training runs"], route_class=UnitOfWorkRoute)


def _out(run: TrainingRun, metrics: dict[str, float] | None = None) -> RunOut:
    return RunOut(
        id=run.id,
        type=run.type,
        status=run.status,
        dataset=run.config.get("dataset"),
        dataset_version_id=run.dataset_version_id,
        config=run.config,
        artifact_uri=run.artifact_uri,
        checkpoint=run.checkpoint,
        error=run.error,
        lease_owner=run.lease_owner,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        last_metrics=metrics,
    )


@router.post("", response_model=RunOut, status_code=status.HTTP_201_CREATED)
def create_run(body: RunCreate, session: SessionDep, key: TrainKey) -> RunOut:
    return _out(service.create(session, key.project_id, body))


@router.get("", response_model=Page[RunOut])
def list_runs(
    session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 50
) -> Page[RunOut]:
    query = select(TrainingRun).where(TrainingRun.project_id == key.project_id)
    runs, next_cursor = keyset(
        session, query, TrainingRun.created_at, TrainingRun.id, cursor, limit
    )
    return Page(items=[_out(r) for r in runs], next_cursor=next_cursor)


@router.get("/{run_id}", response_model=RunOut)
def get_run(run_id: str, session: SessionDep, key: ReadKey) -> RunOut:
    run = service.get(session, key.project_id, run_id)
    return _out(run, service.last_metrics(session, run.id))


@router.get("/{run_id}/metrics", response_model=Page[MetricOut])
def run_metrics(
    run_id: str, session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 1000
) -> Page[MetricOut]:
    run = service.get(session, key.project_id, run_id)
    query = select(RunMetric).where(RunMetric.run_id == run.id)
    rows, next_cursor = id_page(session, query, RunMetric.id, cursor, limit)
    return Page(items=[MetricOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post("/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: str, session: SessionDep, key: TrainKey) -> RunOut:
    run = service.get(session, key.project_id, run_id)
    service.cancel(run)
    return _out(run)


@router.post("/{run_id}/resume", response_model=RunOut)
def resume_run(run_id: str, session: SessionDep, key: TrainKey) -> RunOut:
    run = service.get(session, key.project_id, run_id)
    service.resume(run)
    return _out(run)


# The trainer's side: claim, heartbeat, report. Every call names the lease owner.


@router.post("/claim", response_model=RunOut, responses={204: {"description": "Nothing queued."}})
def claim_run(
    body: ClaimRequest, session: SessionDep, settings: SettingsDep, key: TrainKey
) -> RunOut | Response:
    run = service.claim(session, key.project_id, body.owner, body.types, settings.run_lease_seconds)
    if run is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return _out(run)


@router.post("/{run_id}/heartbeat", response_model=RunOut)
def heartbeat(
    run_id: str, body: Lease, session: SessionDep, settings: SettingsDep, key: TrainKey
) -> RunOut:
    run = service.held(session, key.project_id, run_id, body.owner)
    service.heartbeat(run, settings.run_lease_seconds)
    return _out(run)


@router.post("/{run_id}/metrics", status_code=status.HTTP_204_NO_CONTENT)
def report_metrics(
    run_id: str, body: MetricsReport, session: SessionDep, key: TrainKey
) -> Response:
    run = service.held(session, key.project_id, run_id, body.owner)
    service.add_metrics(session, run, body.points)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{run_id}/checkpoint", response_model=RunOut)
def report_checkpoint(
    run_id: str, body: CheckpointReport, session: SessionDep, key: TrainKey
) -> RunOut:
    run = service.held(session, key.project_id, run_id, body.owner)
    run.checkpoint = body.checkpoint
    return _out(run)


@router.post("/{run_id}/complete", response_model=RunOut)
def complete_run(run_id: str, body: CompleteReport, session: SessionDep, key: TrainKey) -> RunOut:
    run = service.held(session, key.project_id, run_id, body.owner)
    service.finish(run, "completed", artifact_uri=body.artifact_uri)
    return _out(run)


@router.post("/{run_id}/fail", response_model=RunOut)
def fail_run(run_id: str, body: FailReport, session: SessionDep, key: TrainKey) -> RunOut:
    run = service.held(session, key.project_id, run_id, body.owner)
    service.finish(run, "failed", error=body.error)
    return _out(run)
