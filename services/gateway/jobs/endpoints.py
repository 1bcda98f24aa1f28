from __future__ import annotations

from fastapi import APIRouter, Query, Request, status
from sqlalchemy import select

from charter.core.jobs import ITEM_STATES, ItemState, job_status
from charter.db.models import Job, Label, Worker, WorkItem
from services.gateway.deps import Cursor, Limit, ReadKey, SessionDep, SettingsDep, SubmitKey
from services.gateway.jobs import service
from services.gateway.jobs.schemas import ItemOut, JobCreate, JobOut, LabelOut, WorkerOut
from services.gateway.pagination import Page, id_page, keyset
from services.gateway.routing import UnitOfWorkRoute, after_commit

router = APIRouter(prefix="/v1", tags=["jobs"], route_class=UnitOfWorkRoute)


def _out(job: Job, counts: dict[str, int]) -> JobOut:
    return JobOut(
        id=job.id,
        type=job.type,
        status=job_status(counts, job.status == "cancelled"),
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


@router.post("/jobs", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def submit_job(
    body: JobCreate, request: Request, session: SessionDep, settings: SettingsDep, key: SubmitKey
) -> JobOut:
    job = service.submit(session, key.project_id, body, settings)
    state = request.app.state
    after_commit(request, lambda: state.outbox.publish(job.id, job.chunk_count))
    return _out(job, {"queued": job.item_count})


@router.get("/jobs", response_model=Page[JobOut])
def list_jobs(
    session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 50
) -> Page[JobOut]:
    query = select(Job).where(Job.project_id == key.project_id)
    jobs, next_cursor = keyset(session, query, Job.created_at, Job.id, cursor, limit)
    counts = service.counts(session, [j.id for j in jobs])
    return Page(items=[_out(j, counts[j.id]) for j in jobs], next_cursor=next_cursor)


@router.get("/jobs/{job_id}", response_model=JobOut)
def get_job(job_id: str, session: SessionDep, key: ReadKey) -> JobOut:
    job = service.get(session, key.project_id, job_id)
    return _out(job, service.counts(session, [job.id])[job.id])


@router.post("/jobs/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: str, session: SessionDep, key: SubmitKey) -> JobOut:
    job = service.cancel(session, key.project_id, job_id)
    return _out(job, service.counts(session, [job.id])[job.id])


@router.get("/jobs/{job_id}/results", response_model=Page[LabelOut])
def job_results(
    job_id: str, session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 100
) -> Page[LabelOut]:
    job = service.get(session, key.project_id, job_id)
    query = select(Label).where(Label.job_id == job.id)
    rows, next_cursor = id_page(session, query, Label.id, cursor, limit)
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
    query = select(WorkItem).where(WorkItem.job_id == job.id)
    if state is not None:
        query = query.where(WorkItem.status == state)
    rows, next_cursor = id_page(session, query, WorkItem.id, cursor, limit)
    return Page(items=[ItemOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get(
    "/workers",
    response_model=list[WorkerOut],
    tags=["workers"],
    description="The shared worker fleet, so a project can see which models are served. "
    "Identity (id, host, pid, engine, models) is fleet-wide and already recorded on every "
    "label; `items_done` counts this project's labels only, never other projects' work.",
)
def list_workers(session: SessionDep, key: ReadKey) -> list[WorkerOut]:
    rows = list(session.scalars(select(Worker).order_by(Worker.last_seen.desc())))
    done = service.items_done_by_worker(session, key.project_id, [w.id for w in rows])
    return [
        WorkerOut.model_validate(w).model_copy(update={"items_done": done.get(w.id, 0)})
        for w in rows
    ]
