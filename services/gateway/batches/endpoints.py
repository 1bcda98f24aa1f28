from __future__ import annotations

from fastapi import APIRouter, Query, Request, status
from starlette.concurrency import run_in_threadpool

from charter.db.models import PromptBatch
from services.gateway.batches import service
from services.gateway.batches.schemas import BatchCreate, BatchOut, PromptOut
from services.gateway.deps import Cursor, Limit, ReadKey, SessionDep, SettingsDep, SubmitKey
from services.gateway.jsonl import body_chunks, check_media_type
from services.gateway.pagination import Page
from services.gateway.unit_of_work import UnitOfWorkRoute, streams_body

router = APIRouter(prefix="/v1/batches", tags=["batches"], route_class=UnitOfWorkRoute)


def _out(batch: PromptBatch) -> BatchOut:
    return BatchOut(
        id=batch.id, name=batch.name, row_count=batch.row_count, created_at=batch.created_at
    )


@router.post("", response_model=BatchOut, status_code=status.HTTP_201_CREATED)
def create_batch(body: BatchCreate, session: SessionDep, key: SubmitKey) -> BatchOut:
    rows = [service.record(row) for row in body.rows]
    return _out(service.create(session, key.project_id, body.name, rows))


@router.post(
    "/upload",
    response_model=BatchOut,
    status_code=status.HTTP_201_CREATED,
    summary="Upload JSONL: one {prompt|messages[, response | response_a, response_b]} per line",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
@streams_body
async def upload_batch(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: SubmitKey,
    name: str = Query(default="", max_length=128),
) -> BatchOut:
    check_media_type(request.headers.get("content-type", ""))

    def store() -> BatchOut:  # parsing and the database work, off the event loop
        rows = service.parse_jsonl(
            body_chunks(request),
            settings.max_batch_rows,
            bounds=settings.document_bounds,
            max_line_bytes=settings.max_jsonl_line_bytes,
        )
        return _out(service.create(session, key.project_id, name, rows))

    return await run_in_threadpool(store)


@router.get("", response_model=Page[BatchOut])
def list_batches(
    session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 100
) -> Page[BatchOut]:
    rows, next_cursor = service.page(session, key.project_id, cursor, limit)
    return Page(items=[_out(b) for b in rows], next_cursor=next_cursor)


@router.get("/{batch_id}", response_model=BatchOut)
def get_batch(batch_id: str, session: SessionDep, key: ReadKey) -> BatchOut:
    return _out(service.get(session, key.project_id, batch_id))


@router.get("/{batch_id}/prompts", response_model=Page[PromptOut])
def list_prompts(
    batch_id: str, session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 100
) -> Page[PromptOut]:
    batch = service.get(session, key.project_id, batch_id)
    rows, next_cursor = service.prompts_page(session, batch.id, cursor, limit)
    return Page(
        items=[PromptOut.model_validate(r, from_attributes=True) for r in rows],
        next_cursor=next_cursor,
    )
