"""``/v1/gold-sets``: comparisons with a known answer, for judge evaluation."""

from __future__ import annotations

from fastapi import APIRouter, Path, Request, Response, status
from starlette.concurrency import run_in_threadpool

from charter.db.models import GoldSet
from charter.errors import NotFound
from services.gateway.deps import Cursor, Limit, ReadKey, SessionDep, SettingsDep, SubmitKey
from services.gateway.gold import service
from services.gateway.gold.schemas import NAME_PATTERN, GoldItemOut, GoldSetOut
from services.gateway.jsonl import body_chunks, check_media_type
from services.gateway.pagination import Page, decode_int_cursor, encode_cursor
from services.gateway.unit_of_work import UnitOfWorkRoute, streams_body

router = APIRouter(prefix="/v1/gold-sets", tags=["evaluation"], route_class=UnitOfWorkRoute)


def out(gold: GoldSet, created: bool | None = None) -> GoldSetOut:
    return GoldSetOut(
        id=gold.id, name=gold.name, version=gold.version, ref=f"{gold.name}@{gold.version}",
        batch_id=gold.batch_id, row_count=gold.row_count, content_hash=gold.content_hash,
        categories=gold.categories, created_at=gold.created_at, created=created,
    )  # fmt: skip


@router.post(
    "/{name}",
    response_model=GoldSetOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": GoldSetOut, "description": "Unchanged: the latest version."}},
    summary="Push a gold set as JSONL: one {prompt|messages, response_a, response_b, answer"
    "[, p_gold][, category]} per line",
    description="A new version when the rows differ from the latest version of `name` (201), "
    "else the latest itself (200, `created: false`). `answer` is `a` or `b`; `p_gold`, for soft "
    "gold, is P(response a is better) and must lie on the answer's side of 0.5.",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
@streams_body
async def push_gold_set(
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    key: SubmitKey,
    name: str = Path(pattern=f"^{NAME_PATTERN}$"),
) -> GoldSetOut:
    check_media_type(request.headers.get("content-type", ""))

    def store() -> tuple[GoldSet, bool]:
        rows = service.parse_jsonl(
            body_chunks(request),
            bounds=settings.document_bounds,
            max_line_bytes=settings.max_jsonl_line_bytes,
        )
        return service.push(session, key.project_id, name, rows)

    gold, created = await run_in_threadpool(store)
    if not created:
        response.status_code = status.HTTP_200_OK
    return out(gold, created)


@router.get("", response_model=list[GoldSetOut])
def list_gold_sets(session: SessionDep, key: ReadKey) -> list[GoldSetOut]:
    """Every version of every gold set, by name then version."""
    return [out(g) for g in service.listing(session, key.project_id)]


@router.get("/{ref}", response_model=GoldSetOut)
def get_gold_set(ref: str, session: SessionDep, key: ReadKey) -> GoldSetOut:
    """``name`` (the latest version) or ``name@version``."""
    return out(service.resolve(session, key.project_id, ref, field="ref", malformed=NotFound))


@router.get("/{ref}/items", response_model=Page[GoldItemOut])
def list_gold_items(
    ref: str, session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 100
) -> Page[GoldItemOut]:
    """The rows with their answers, in order."""
    gold = service.resolve(session, key.project_id, ref, field="ref", malformed=NotFound)
    start = decode_int_cursor(cursor, -1) + 1
    rows = service.items(session, gold, start, limit + 1)
    more = len(rows) > limit
    next_cursor = encode_cursor(rows[limit - 1]["position"]) if more else None
    return Page(items=[GoldItemOut(**row) for row in rows[:limit]], next_cursor=next_cursor)
