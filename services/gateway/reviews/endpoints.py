from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from charter.core import agreement
from charter.core.export import jsonl_line
from charter.db.models import ApiKey, ReviewQueue, ReviewVerdict
from services.gateway.deps import Cursor, Limit, ReadKey, SessionDep, SettingsDep, require
from services.gateway.jsonl import check_media_type, parse_lines
from services.gateway.pagination import Page
from services.gateway.reviews import service
from services.gateway.reviews.schemas import (
    REVIEWER_MAX,
    AgreementOut,
    ImportLine,
    ImportOut,
    ItemOut,
    QueueCreate,
    QueueOut,
    VerdictCreate,
    VerdictOut,
)
from services.gateway.unit_of_work import UnitOfWorkRoute

router = APIRouter(prefix="/v1", tags=["reviews"], route_class=UnitOfWorkRoute)

ReviewKey = Annotated[ApiKey, Depends(require("review"))]
Reviewer = Annotated[
    str,
    Query(
        max_length=REVIEWER_MAX,
        description="The reviewer's name, when one key is shared (as given with verdicts).",
    ),
]
LabelId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The label's id.")]
NDJSON = "application/x-ndjson"


def queue_out(session: SessionDep, queue: ReviewQueue) -> QueueOut:
    items = service.queue_items(session, queue.id)
    strata: dict[str, int] = {}
    for item in items:
        if item.stratum is not None:
            strata[item.stratum] = strata.get(item.stratum, 0) + 1
    return QueueOut(
        id=queue.id,
        job_id=queue.job_id,
        job_type=service.job(session, queue.project_id, queue.job_id).type,
        strategy=queue.strategy,
        by=queue.by,
        seed=queue.seed,
        size=queue.size,
        requested_size=queue.requested_size,
        reviewed=service.reviewed_count(session, queue.id),
        strata=strata,
        target_reached_at=queue.target_reached_at,
        created_at=queue.created_at,
        items=[item.label_id for item in items],
    )


def verdict_out(row: ReviewVerdict, *, replaced: bool = False) -> VerdictOut:
    return VerdictOut(
        id=row.id,
        label_id=row.label_id,
        queue_id=row.queue_id,
        api_key_id=row.api_key_id,
        key_prefix=row.key_prefix,
        reviewer=row.reviewer,
        choice=row.choice,  # type: ignore[arg-type]
        satisfies=row.satisfies,
        note=row.note,
        agrees=row.agrees,
        source=row.source,
        revision=row.revision,
        replaced=replaced,
        history=row.history,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def agreement_out(
    report: agreement.Report, verdicts: int, *, job_id: str | None, model: str | None
) -> AgreementOut:
    def rate(r: agreement.Rate) -> dict[str, object]:
        return {"agreed": r.agreed, "n": r.n, "rate": r.rate, "low": r.low, "high": r.high}

    return AgreementOut.model_validate(
        {
            "job_id": job_id,
            "model": model,
            "labels": report.labels,
            "reviewers": report.reviewers,
            "verdicts": verdicts,
            "overall": rate(report.overall),
            "by_principle": {k: rate(v) for k, v in report.by_principle.items()},
            "by_model": {k: rate(v) for k, v in report.by_model.items()},
            "calibration": [
                {"low": b.low, "high": b.high, "rate": rate(b.rate)} for b in report.calibration
            ],
            "kappa": {
                "mean": report.kappa.mean,
                "pairs": report.kappa.pairs,
                "undefined_pairs": report.kappa.undefined_pairs,
                "items": report.kappa.items,
            },
        }
    )


@router.post(
    "/jobs/{job_id}/reviews/queues",
    response_model=QueueOut,
    status_code=status.HTTP_201_CREATED,
    summary="Open a review queue: a seeded sample of the job's labels",
)
def open_queue(job_id: str, body: QueueCreate, session: SessionDep, key: ReviewKey) -> QueueOut:
    return queue_out(session, service.open_queue(session, key, job_id, body))


@router.get("/reviews/queues/{queue_id}", response_model=QueueOut)
def get_queue(queue_id: str, session: SessionDep, key: ReadKey) -> QueueOut:
    return queue_out(session, service.queue(session, key.project_id, queue_id))


@router.get(
    "/reviews/queues/{queue_id}/items",
    response_model=Page[ItemOut],
    summary="The queue's items: what was labelled, the AI label, and the caller's verdict",
)
def queue_items(
    queue_id: str,
    session: SessionDep,
    key: ReadKey,
    reviewer: Reviewer = "",
    cursor: Cursor = None,
    limit: Limit = 50,
) -> Page[ItemOut]:
    queue = service.queue(session, key.project_id, queue_id)
    comparison = service.is_comparison(service.job(session, key.project_id, queue.job_id).type)
    rows, next_cursor = service.items_page(session, queue.id, cursor, limit)
    views = service.item_views(session, key.id, reviewer, rows, comparison=comparison)
    items = []
    for view in views:
        mine = view.pop("mine")
        items.append(ItemOut(**view, my_verdict=verdict_out(mine) if mine else None))
    return Page(items=items, next_cursor=next_cursor)


@router.post(
    "/reviews/queues/{queue_id}/items/{label_id}/verdicts",
    response_model=VerdictOut,
    status_code=status.HTTP_201_CREATED,
    summary="Give (or replace) the caller's verdict on a queued label",
    description="201 for the reviewer's first verdict on the label; 200 when it replaces "
    "theirs (`replaced: true`; the earlier verdicts are in `history`). The AI label is "
    "never changed.",
)
def give_verdict(
    queue_id: str,
    label_id: LabelId,
    body: VerdictCreate,
    response: Response,
    session: SessionDep,
    key: ReviewKey,
) -> VerdictOut:
    row, replaced = service.give_verdict(session, key, queue_id, label_id, body)
    if replaced:
        response.status_code = status.HTTP_200_OK
    return verdict_out(row, replaced=replaced)


@router.get(
    "/jobs/{job_id}/reviews/agreement",
    response_model=AgreementOut,
    summary="AI-human agreement on the job's labels (per principle, model, confidence)",
)
def job_agreement(job_id: str, session: SessionDep, key: ReadKey) -> AgreementOut:
    job = service.job(session, key.project_id, job_id)
    report, n = service.agreement_report(session, key.project_id, job_id=job.id)
    return agreement_out(report, n, job_id=job.id, model=None)


@router.get(
    "/reviews/agreement",
    response_model=AgreementOut,
    summary="AI-human agreement over the project's reviewed labels, of one model if given",
)
def project_agreement(
    session: SessionDep,
    key: ReadKey,
    model: str | None = Query(default=None, max_length=128, description="The label's model."),
) -> AgreementOut:
    report, n = service.agreement_report(session, key.project_id, model=model)
    return agreement_out(report, n, job_id=None, model=model)


@router.get(
    "/jobs/{job_id}/reviews/export",
    response_class=Response,
    summary="The job's verdicts as JSONL, one line per verdict",
    responses={200: {"content": {NDJSON: {}}}},
)
def export_reviews(job_id: str, session: SessionDep, key: ReadKey) -> Response:
    rows = service.export_rows(session, key.project_id, job_id)
    body = "".join(jsonl_line(row) for row in rows)
    headers = {"Content-Disposition": f'attachment; filename="reviews-{job_id}.jsonl"'}
    return Response(body.encode(), media_type=NDJSON, headers=headers)


@router.post(
    "/jobs/{job_id}/reviews/import",
    response_model=ImportOut,
    summary="Import verdicts (the export's JSONL): all lines or none",
    description="Each line needs label_id, verdict ({choice} or {satisfies}, note) and "
    "reviewer ({key_id, key_prefix, name}); errors name the line and field. Idempotent "
    "on (label, reviewer): an unchanged line changes nothing.",
    openapi_extra={
        "requestBody": {"required": True, "content": {NDJSON: {"schema": {"type": "string"}}}}
    },
)
async def import_reviews(
    job_id: str, request: Request, session: SessionDep, settings: SettingsDep, key: ReviewKey
) -> ImportOut:
    check_media_type(request.headers.get("content-type", ""))
    body = await request.body()

    def store() -> ImportOut:
        service.job(session, key.project_id, job_id)  # 404 before parsing the body
        rows = parse_lines(
            body,
            ImportLine.model_validate,
            settings.max_batch_rows,
            "review import",
            bounds=settings.document_bounds,
            max_line_bytes=settings.max_jsonl_line_bytes,
        )
        # parse_lines skips blank lines: number the rows as the body's lines are numbered.
        numbers = [i for i, line in enumerate(body.splitlines(), 1) if line.strip()]
        numbered = list(zip(numbers, rows, strict=True))
        return ImportOut(**service.import_rows(session, key.project_id, job_id, numbered))

    return await run_in_threadpool(store)
