"""``/v1/evals``: judge evaluations on gold sets, and the attack suite they can add."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from charter.core import injection
from charter.db.models import EvalRun, GoldSet
from services.gateway.deps import Cursor, Limit, ReadKey, SessionDep, SettingsDep, SubmitKey
from services.gateway.evals import report, service
from services.gateway.evals.schemas import (
    AttackOut,
    EvalCreate,
    EvalJobOut,
    EvalOut,
    EvalReportOut,
)
from services.gateway.jobs import service as jobs
from services.gateway.jobs.endpoints import job_status_of
from services.gateway.pagination import Page
from services.gateway.unit_of_work import UnitOfWorkRoute, after_commit

router = APIRouter(prefix="/v1/evals", tags=["evaluation"], route_class=UnitOfWorkRoute)


def out(session: SessionDep, run: EvalRun) -> EvalOut:
    gold = session.get(GoldSet, run.gold_set_id)
    assert gold is not None
    jobs_of_run = service.run_jobs(session, run)
    counts = jobs.counts(session, [r.job.id for r in jobs_of_run])
    return EvalOut(
        id=run.id,
        name=run.name,
        gold_set=f"{gold.name}@{gold.version}",
        status=service.status(jobs_of_run, counts),
        configs=run.configs,
        injection=run.injection,
        seed=run.seed,
        jobs=[
            EvalJobOut(
                config=r.config,
                variant=r.variant,
                job_id=r.job.id,
                status=job_status_of(r.job, counts[r.job.id]),
                counts=counts[r.job.id],
            )
            for r in jobs_of_run
        ],
        items_total=sum(r.job.item_count for r in jobs_of_run),
        items_finished=sum(service.finished(counts[r.job.id]) for r in jobs_of_run),
        created_at=run.created_at,
    )


@router.post(
    "",
    response_model=EvalOut,
    status_code=status.HTTP_202_ACCEPTED,
    description="Score a gold set with each judge configuration (one `compare` job each, on "
    "the workers), and with `injection` its adversarial variants too. Each configuration's "
    "errors name its field: `body.configs.<i>.<field>`.",
)
def submit_eval(
    body: EvalCreate, request: Request, session: SessionDep, settings: SettingsDep, key: SubmitKey
) -> EvalOut:
    run, made = service.submit(session, key.project_id, body, settings)
    outbox = request.app.state.outbox
    for r in made:
        job = r.job
        after_commit(
            request,
            lambda job=job: outbox.publish(job.id, job.model, job.chunk_count),  # type: ignore[misc]
        )
    return out(session, run)


@router.get("/attacks", response_model=list[AttackOut])
def list_attacks(key: ReadKey) -> list[AttackOut]:
    """The shipped injection suite (``charter.core.injection``), in order."""
    return [
        AttackOut(id=a.id, family=a.family, description=a.description, text=a.text)
        for a in injection.SUITE
    ]


@router.get("", response_model=Page[EvalOut])
def list_evals(
    session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 50
) -> Page[EvalOut]:
    runs, next_cursor = service.page(session, key.project_id, cursor, limit)
    return Page(items=[out(session, r) for r in runs], next_cursor=next_cursor)


@router.get("/{eval_id}", response_model=EvalOut)
def get_eval(eval_id: str, session: SessionDep, key: ReadKey) -> EvalOut:
    return out(session, service.get(session, key.project_id, eval_id))


@router.get("/{eval_id}/report", response_model=EvalReportOut)
def eval_report(eval_id: str, session: SessionDep, key: ReadKey) -> EvalReportOut:
    """Every number, from the labels stored so far (``complete`` says whether all are in)."""
    run = service.get(session, key.project_id, eval_id)
    return EvalReportOut(**report.build(session, run))


@router.post("/{eval_id}/cancel", response_model=EvalOut)
def cancel_eval(eval_id: str, session: SessionDep, key: SubmitKey) -> EvalOut:
    """Cancel its unfinished jobs; the labels already stored stay and are reported."""
    return out(session, service.cancel(session, key.project_id, eval_id))
