from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from charter.db.models import Dataset, DatasetVersion, as_utc, utcnow
from charter.errors import Invalid
from services.gateway.datasets import export, parquet, service
from services.gateway.datasets.schemas import DatasetCreate, DatasetKind, DatasetVersionOut
from services.gateway.deps import Cursor, Limit, ReadKey, SessionDep, SettingsDep, SubmitKey
from services.gateway.jsonl import check_media_type
from services.gateway.pagination import Page
from services.gateway.unit_of_work import UnitOfWorkRoute, after_commit

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=UnitOfWorkRoute)

MEDIA_TYPES = {"jsonl": "application/x-ndjson", "parquet": "application/vnd.apache.parquet"}


def _source(version: DatasetVersion) -> Literal["labels", "upload", "classifier_data"]:
    if version.filter.get("upload"):
        return "upload"
    return "classifier_data" if "classifier_data" in version.filter else "labels"


def out(dataset: Dataset, version: DatasetVersion) -> DatasetVersionOut:
    return DatasetVersionOut(
        name=dataset.name,
        kind=dataset.kind,
        version=version.version,
        ref=f"{dataset.name}@{version.version}",
        source=_source(version),
        state=version.state,
        rows_done=version.rows_done,
        rows_total=version.rows_total,
        row_count=version.row_count,
        checksum=version.checksum,
        error=version.error,
        filter=version.filter,
        mix=version.mix,
        created_at=version.created_at,
        ready_at=version.ready_at,
    )


def _resume_if_orphaned(request: Request, version: DatasetVersion) -> None:
    """A freezing version whose freezer went silent (its lease expired) is taken over
    here: a client waiting on it polls this, so it never waits on a dead gateway."""
    if version.state == "freezing" and (
        version.lease_expires_at is None or as_utc(version.lease_expires_at) < utcnow()
    ):
        request.app.state.freezer.wake()


@router.post(
    "",
    response_model=DatasetVersionOut,
    status_code=status.HTTP_202_ACCEPTED,
    summary="Freeze the labels a filter selects (and any mixed rows) into a new version",
    description=(
        "Answers at once with the version in state `freezing`; its rows are frozen in the "
        "background (progress: `rows_done` of `rows_total`). Poll `GET /v1/datasets/{ref}` "
        "until `state` is `ready` (then `row_count` and `checksum` are set) or `failed`."
    ),
)
def create_dataset(
    body: DatasetCreate, request: Request, session: SessionDep, key: SubmitKey
) -> DatasetVersionOut:
    dataset, version = service.create(session, key.project_id, body)
    after_commit(request, request.app.state.freezer.wake)
    return out(dataset, version)


@router.get("", response_model=Page[DatasetVersionOut], summary="Datasets, latest version each")
def list_datasets(
    session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 100
) -> Page[DatasetVersionOut]:
    rows, next_cursor = service.page(session, key.project_id, cursor, limit)
    latest = service.latest_versions(session, rows)
    return Page(items=[out(d, latest[d.id]) for d in rows], next_cursor=next_cursor)


@router.get("/{ref}", response_model=DatasetVersionOut, summary="A version (name or name@version)")
def get_dataset(ref: str, request: Request, session: SessionDep, key: ReadKey) -> DatasetVersionOut:
    dataset, version = service.resolve(session, key.project_id, ref)
    _resume_if_orphaned(request, version)
    return out(dataset, version)


@router.get("/{name}/versions", response_model=list[DatasetVersionOut])
def list_versions(name: str, session: SessionDep, key: ReadKey) -> list[DatasetVersionOut]:
    dataset, rows = service.versions(session, key.project_id, name)
    return [out(dataset, v) for v in rows]


@router.post(
    "/{name}/upload",
    response_model=DatasetVersionOut,
    status_code=status.HTTP_201_CREATED,
    summary="Upload JSONL rows in TRL shape as a new version",
    description=(
        "sft: one `{prompt, completion}` (text or messages) or `{messages}` per line; "
        "preference: one `{prompt, chosen, rejected[, chosen_probability]}` per line."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        }
    },
)
async def upload_dataset(
    name: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: SubmitKey,
    kind: DatasetKind | None = Query(default=None, description="Required for a new dataset."),
) -> DatasetVersionOut:
    service.check_name(name)
    check_media_type(request.headers.get("content-type", ""))
    body = await request.body()

    def store() -> DatasetVersionOut:
        dataset_kind = service.upload_kind(session, key.project_id, name, kind)
        rows = service.parse_jsonl(
            body,
            dataset_kind,
            settings.max_batch_rows,
            bounds=settings.document_bounds,
            max_line_bytes=settings.max_jsonl_line_bytes,
        )
        return out(*service.upload(session, key.project_id, name, dataset_kind, rows))

    return await run_in_threadpool(store)


@router.get(
    "/{ref}/export",
    response_class=StreamingResponse,
    summary="Stream a version as JSONL or Parquet (resumable with start)",
    responses={
        200: {
            "content": {media: {} for media in MEDIA_TYPES.values()},
            "description": "Rows start .. row_count - 1. X-Checksum-SHA256 is the sha256 of "
            "the version's full JSONL export; X-Row-Count its number of rows.",
        }
    },
)
def export_dataset(
    ref: str,
    request: Request,
    session: SessionDep,
    key: ReadKey,
    format: Literal["jsonl", "parquet"] = Query(default="jsonl"),
    start: int = Query(default=0, ge=0, description="First row (0-based): resume after k rows."),
) -> StreamingResponse:
    dataset, version = service.resolve(session, key.project_id, ref)
    _resume_if_orphaned(request, version)
    service.require_ready(dataset, version)
    if start > version.row_count:
        raise Invalid(
            f"start {start} is past the last row ({version.row_count} rows)", field="start"
        )
    stream = export.jsonl if format == "jsonl" else parquet.parquet
    body = stream(request.app.state.sessions, version.id, dataset.kind, start, version.row_count)
    filename = f"{dataset.name}-{version.version}.{format}"
    headers = {
        "X-Checksum-SHA256": version.checksum or "",
        "X-Row-Count": str(version.row_count),
        "X-Start": str(start),
        "X-Dataset-Ref": f"{dataset.name}@{version.version}",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    return StreamingResponse(body, media_type=MEDIA_TYPES[format], headers=headers)
