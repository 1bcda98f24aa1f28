from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from charter.core.constitution import MAX_VERSION
from charter.core.documents import Bounds, DocumentError, load_json, load_yaml
from charter.db.models import ConstitutionVersion
from charter.errors import Invalid, NotFound
from services.gateway.constitutions import service
from services.gateway.constitutions.schemas import (
    ConstitutionSummary,
    ConstitutionVersionOut,
    DiffOut,
)
from services.gateway.deps import ReadKey, SessionDep, SettingsDep, SubmitKey
from services.gateway.unit_of_work import UnitOfWorkRoute

router = APIRouter(prefix="/v1/constitutions", tags=["constitutions"], route_class=UnitOfWorkRoute)

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
        "description": "A constitution document (see constitutions/default.yaml).",
    }
}


def _out(
    name: str, row: ConstitutionVersion, *, content: bool = False, created: bool | None = None
) -> ConstitutionVersionOut:
    return ConstitutionVersionOut(
        name=name,
        version=row.version,
        ref=f"{name}@{row.version}",
        content_hash=row.content_hash,
        created_at=row.created_at,
        created=created,
        content=row.content if content else None,
    )


YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


def _media_type(content_type: str) -> str:
    """``"yaml"`` or ``"json"`` (no Content-Type is JSON); anything else is refused."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type in YAML_TYPES or media_type.endswith("+yaml"):
        return "yaml"
    if media_type in ("", "application/json") or media_type.endswith("+json"):
        return "json"
    raise Invalid(
        f"Content-Type {media_type!r} is not supported: send application/json or application/yaml",
        field="Content-Type",
    )


def parse_document(body: bytes, content_type: str, bounds: Bounds = Bounds()) -> Any:
    """The body's document, parsed strictly (see :mod:`charter.core.documents`)."""
    kind = _media_type(content_type)
    if not body.strip():
        raise Invalid("request body is empty", field="body")
    try:
        return load_yaml(body, bounds) if kind == "yaml" else load_json(body, bounds)
    except DocumentError as exc:
        field = f"body.{exc.path}" if exc.path else "body"
        raise Invalid(f"{field}: {exc}", field=field) from exc


@router.post(
    "",
    response_model=ConstitutionVersionOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_BODY_DOC,
    summary="Create a constitution or a new version of one (identical content: same version)",
)
async def push_constitution(
    request: Request, response: Response, session: SessionDep, settings: SettingsDep, key: SubmitKey
) -> ConstitutionVersionOut:
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    bounds = settings.document_bounds

    def store() -> ConstitutionVersionOut:  # parsing and the database work, off the event loop
        service.check_body_size(body, settings.max_constitution_bytes)
        document = parse_document(body, content_type, bounds)
        constitution = service.validate(document, max_bytes=settings.max_constitution_bytes)
        row, created = service.push(session, key.project_id, constitution)
        if not created:
            response.status_code = status.HTTP_200_OK
        return _out(constitution.name, row, created=created)

    return await run_in_threadpool(store)


@router.get("", response_model=list[ConstitutionSummary])
def list_constitutions(session: SessionDep, key: ReadKey) -> list[ConstitutionSummary]:
    return [
        ConstitutionSummary(
            name=name, latest_version=latest, latest_ref=f"{name}@{latest}", updated_at=updated
        )
        for name, latest, updated in service.listing(session, key.project_id)
    ]


@router.get("/{ref}", response_model=ConstitutionVersionOut, summary="Get name or name@version")
def get_constitution(ref: str, session: SessionDep, key: ReadKey) -> ConstitutionVersionOut:
    row = service.resolve(session, key.project_id, ref, field="ref", malformed=NotFound)
    return _out(service.name_of(session, row), row, content=True)


@router.get("/{name}/versions", response_model=list[ConstitutionVersionOut])
def list_versions(name: str, session: SessionDep, key: ReadKey) -> list[ConstitutionVersionOut]:
    return [_out(name, row) for row in service.versions(session, key.project_id, name)]


@router.get("/{name}/diff", response_model=DiffOut)
def diff_versions(
    name: str,
    session: SessionDep,
    key: ReadKey,
    from_version: int = Query(ge=1, le=MAX_VERSION, alias="from"),
    to_version: int = Query(ge=1, le=MAX_VERSION, alias="to"),
) -> DiffOut:
    result = service.compare(session, key.project_id, name, from_version, to_version)
    return DiffOut(name=name, from_version=from_version, to_version=to_version, diff=result)
