from __future__ import annotations

from fastapi import APIRouter, Query, Request, status

from charter.core.jobs import ITEM_STATES, ItemState, JobStatus, job_status
from charter.db.models import Job
from services.gateway.deps import Cursor, Limit, ReadKey, SessionDep, SettingsDep, SubmitKey
from services.gateway.jobs import service
from services.gateway.jobs.schemas import ItemOut, JobCreate, JobOut, LabelOut
from services.gateway.pagination import Page
from services.gateway.unit_of_work import UnitOfWorkRoute, after_commit

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=UnitOfWorkRoute)


def job_status_of(job: Job, counts: dict[str, int]) -> JobStatus:
    return job_status(counts, job.status == JobStatus.CANCELLED)


def out(job: Job, counts: dict[str, int]) -> JobOut:
    return JobOut(
        id=job.id,
        type=job.type,
        status=job_status_of(job, counts),
        batch_id=job.batch_id,
        constitution=job.constitution_ref,
        model=job.model,
        params=job.params,
        seed=job.seed,
        item_count=job.item_count,
        chunk_count=job.chunk_count,
        counts={state: counts.get(state, 0) for state in ITEM_STATES},
        created_at=job.created_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
    )


def queued(request: Request, job: Job) -> JobOut:
    """A job just submitted: published to the workers once the request commits."""
    outbox = request.app.state.outbox
    after_commit(request, lambda: outbox.publish(job.id, job.model, job.chunk_count))
    return out(job, {ItemState.QUEUED: job.item_count})


@router.post("/jobs", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def submit_job(
    body: JobCreate, request: Request, session: SessionDep, settings: SettingsDep, key: SubmitKey
) -> JobOut:
    return queued(request, service.submit(session, key.project_id, body, settings))


@router.get("/jobs", response_model=Page[JobOut])
def list_jobs(
    session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 50
) -> Page[JobOut]:
    jobs, next_cursor = service.page(session, key.project_id, cursor, limit)
    counts = service.counts(session, [j.id for j in jobs])
    return Page(items=[out(j, counts[j.id]) for j in jobs], next_cursor=next_cursor)


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, session: SessionDep, key: ReadKey) -> JobOut:
    job = service.get(session, key.project_id, job_id)
    return out(job, service.counts(session, [job.id])[job.id])


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, session: SessionDep, key: SubmitKey) -> JobOut:
    job = service.cancel(session, key.project_id, job_id)
    return out(job, service.counts(session, [job.id])[job.id])


@router.get("/jobs/{job_id}/results", response_model=Page[LabelOut])
def job_results(
    job_id: str, session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 100
) -> Page[LabelOut]:
    job = service.get(session, key.project_id, job_id)
    rows, next_cursor = service.results_page(session, job.id, cursor, limit)
    return Page(items=[LabelOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/jobs/{job_id}/items", response_model=Page[ItemOut])
def job_items(
    job_id: str,
    session: SessionDep,
    key: ReadKey,
    state: ItemState | None = Query(default=None),
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[ItemOut]:
    job = service.get(session, key.project_id, job_id)
    rows, next_cursor = service.items_page(session, job.id, state, cursor, limit)
    return Page(items=[ItemOut.model_validate(r) for r in rows], next_cursor=next_cursor)
