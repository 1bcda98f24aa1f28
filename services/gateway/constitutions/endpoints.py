from __future__ import annotations

import json
from typing import Any

import yaml
from fastapi import APIRouter, Query, Request, Response, status

from charter.db.models import ConstitutionVersion
from charter.errors import Invalid
from services.gateway.constitutions import service
from services.gateway.constitutions.schemas import (
    ConstitutionSummary,
    ConstitutionVersionOut,
    DiffOut,
)
from services.gateway.deps import ReadKey, SessionDep, SubmitKey
from services.gateway.routing import UnitOfWorkRoute

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


def parse_document(body: bytes, content_type: str) -> Any:
    if not body.strip():
        raise Invalid("request body is empty", field="body")
    try:
        if "yaml" in content_type:
            return yaml.safe_load(body)
        return json.loads(body)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        kind = "YAML" if "yaml" in content_type else "JSON"
        raise Invalid(f"body is not valid {kind}: {exc}", field="body") from exc


@router.post(
    "",
    response_model=ConstitutionVersionOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_BODY_DOC,
    summary="Create a constitution or a new version of one (identical content: same version)",
)
async def push_constitution(
    request: Request, response: Response, session: SessionDep, key: SubmitKey
) -> ConstitutionVersionOut:
    document = parse_document(await request.body(), request.headers.get("content-type", ""))
    constitution = service.validate(document)
    row, created = service.push(session, key.project_id, constitution)
    if not created:
        response.status_code = status.HTTP_200_OK
    return _out(constitution.name, row, created=created)


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
    row = service.resolve(session, key.project_id, ref, field="ref")
    return _out(service.name_of(session, row), row, content=True)


@router.get("/{name}/versions", response_model=list[ConstitutionVersionOut])
def list_versions(name: str, session: SessionDep, key: ReadKey) -> list[ConstitutionVersionOut]:
    return [_out(name, row) for row in service.versions(session, key.project_id, name)]


@router.get("/{name}/diff", response_model=DiffOut)
def diff_versions(
    name: str,
    session: SessionDep,
    key: ReadKey,
    from_version: int = Query(ge=1, alias="from"),
    to_version: int = Query(ge=1, alias="to"),
) -> DiffOut:
    result = service.compare(session, key.project_id, name, from_version, to_version)
    return DiffOut(name=name, from_version=from_version, to_version=to_version, diff=result)
