"""``/v1/policy-evals``: policies rated by Elo from pairwise judge comparisons."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from charter.db.models import PolicyEval
from charter.errors import NotFound
from services.gateway.deps import Cursor, Limit, ReadKey, SessionDep, SettingsDep, SubmitKey
from services.gateway.evals.service import finished
from services.gateway.jobs import service as jobs
from services.gateway.jobs.endpoints import job_status_of
from services.gateway.pagination import Page
from services.gateway.policy_evals import plot, report, service
from services.gateway.policy_evals.schemas import (
    PolicyEvalCreate,
    PolicyEvalJobOut,
    PolicyEvalOut,
    PolicyEvalReportOut,
)
from services.gateway.unit_of_work import UnitOfWorkRoute, after_commit

router = APIRouter(prefix="/v1/policy-evals", tags=["evaluation"], route_class=UnitOfWorkRoute)


def out(session: SessionDep, run: PolicyEval) -> PolicyEvalOut:
    rows = service.run_jobs(session, run)
    counts = jobs.counts(session, [r.job.id for r in rows])
    return PolicyEvalOut(
        id=run.id,
        name=run.name,
        batch_id=run.batch_id,
        stage=run.stage,  # type: ignore[arg-type]
        status=service.status(run, rows, counts),
        error=run.error,
        policies=run.policies,
        judges=run.judges,
        anchor=run.anchor,
        plot=run.plot,
        bootstrap=run.bootstrap,
        seed=run.seed,
        pairs_batch_id=run.pairs_batch_id,
        comparisons=run.comparisons,
        jobs=[
            PolicyEvalJobOut(
                role=r.role,  # type: ignore[arg-type]
                name=r.name,
                job_id=r.job.id,
                status=job_status_of(r.job, counts[r.job.id]),
                counts=counts[r.job.id],
            )
            for r in rows
        ],
        items_total=sum(r.job.item_count for r in rows),
        items_finished=sum(finished(counts[r.job.id]) for r in rows),
        created_at=run.created_at,
        advanced_at=run.advanced_at,
    )


@router.post(
    "",
    response_model=PolicyEvalOut,
    status_code=status.HTTP_202_ACCEPTED,
    description="Rate policies by Elo: each policy answers the batch (a `generate` job "
    "each); once all have, each judge compares every pair of answers (a `compare` job "
    "each). Errors name their field: `body.policies.<i>.<field>`, `body.judges.<i>.<field>`.",
)
def submit_policy_eval(
    body: PolicyEvalCreate,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: SubmitKey,
) -> PolicyEvalOut:
    run, made = service.submit(session, key.project_id, body, settings)
    outbox = request.app.state.outbox
    for job in made:
        after_commit(
            request,
            lambda job=job: outbox.publish(job.id, job.model, job.chunk_count),  # type: ignore[misc]
        )
    return out(session, run)


@router.get("", response_model=Page[PolicyEvalOut])
def list_policy_evals(
    session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 50
) -> Page[PolicyEvalOut]:
    runs, next_cursor = service.page(session, key.project_id, cursor, limit)
    return Page(items=[out(session, r) for r in runs], next_cursor=next_cursor)


@router.get("/{eval_id}", response_model=PolicyEvalOut)
def get_policy_eval(eval_id: str, session: SessionDep, key: ReadKey) -> PolicyEvalOut:
    return out(session, service.get(session, key.project_id, eval_id))


@router.get("/{eval_id}/report", response_model=PolicyEvalReportOut)
def policy_eval_report(eval_id: str, session: SessionDep, key: ReadKey) -> PolicyEvalReportOut:
    """Elo scores with bootstrap intervals per judge, from the labels stored so far."""
    run = service.get(session, key.project_id, eval_id)
    return PolicyEvalReportOut(**report.build(session, run))


@router.get(
    "/{eval_id}/plot.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "The plot as PNG."}},
)
def policy_eval_plot(eval_id: str, session: SessionDep, key: ReadKey) -> Response:
    """The paper's figure: Elo under one judge against another, with intervals. 404
    (naming ``plot``) while a plotted judge has no ratings, or with a single judge."""
    run = service.get(session, key.project_id, eval_id)
    image = plot.png(report.build(session, run))
    if image is None:
        why = "it has one judge" if run.plot is None else "a plotted judge has no ratings yet"
        raise NotFound(f"policy evaluation {eval_id!r} has no plot: {why}", field="plot")
    return Response(image, media_type="image/png")


@router.post("/{eval_id}/cancel", response_model=PolicyEvalOut)
def cancel_policy_eval(eval_id: str, session: SessionDep, key: SubmitKey) -> PolicyEvalOut:
    """Cancel its unfinished jobs; what was labelled stays and is reported."""
    return out(session, service.cancel(session, key.project_id, eval_id))
