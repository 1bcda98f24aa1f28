from __future__ import annotations

from fastapi import APIRouter, Request, status

from services.gateway.deps import AdminKey, SessionDep, SettingsDep
from services.gateway.keys import service
from services.gateway.keys.schemas import KeyCreate, KeyCreated, KeyOut
from services.gateway.unit_of_work import UnitOfWorkRoute, mark_secret

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=UnitOfWorkRoute)


@router.post(
    "",
    response_model=KeyCreated,
    status_code=status.HTTP_201_CREATED,
    description="The secret is in this response only. A retry with the same Idempotency-Key "
    "is answered 409 (naming the key created), never with the secret again.",
)
def create_key(
    body: KeyCreate, request: Request, session: SessionDep, settings: SettingsDep, key: AdminKey
) -> KeyCreated:
    row, plaintext = service.issue(session, key.project_id, body, settings.secret_key)
    mark_secret(request, "key")
    return KeyCreated(**KeyOut.model_validate(row).model_dump(), key=plaintext)


@router.get("", response_model=list[KeyOut])
def list_keys(session: SessionDep, key: AdminKey) -> list[KeyOut]:
    return [KeyOut.model_validate(r) for r in service.listing(session, key.project_id)]


@router.post(
    "/{key_id}/revoke",
    response_model=KeyOut,
    description="409 for the project's last usable admin key: a project keeps one.",
)
def revoke_key(key_id: str, session: SessionDep, key: AdminKey) -> KeyOut:
    return KeyOut.model_validate(service.revoke(session, key.project_id, key_id))
