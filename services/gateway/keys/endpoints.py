from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal, get_args

from fastapi import APIRouter, Request, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from charter import keys
from charter.db.models import ApiKey, utcnow
from charter.errors import Conflict, NotFound
from charter.projects import issue_key, live_admin_keys
from services.gateway.deps import AdminKey, SessionDep, SettingsDep
from services.gateway.routing import UnitOfWorkRoute, mark_secret

Scope = Literal["admin", "submit", "read", "train"]
assert set(get_args(Scope)) == set(keys.SCOPES)

router = APIRouter(prefix="/v1/keys", tags=["keys"], route_class=UnitOfWorkRoute)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(default="", max_length=128)
    scopes: list[Scope] = Field(min_length=1, max_length=4)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class KeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The secret key. It is shown only once.")


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
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    row, plaintext = issue_key(
        session,
        key.project_id,
        body.scopes,
        settings.secret_key,
        name=body.name,
        expires_at=expires,
    )
    mark_secret(request, "key")
    return KeyCreated(**KeyOut.model_validate(row).model_dump(), key=plaintext)


@router.get("", response_model=list[KeyOut])
def list_keys(session: SessionDep, key: AdminKey) -> list[KeyOut]:
    rows = session.scalars(
        select(ApiKey).where(ApiKey.project_id == key.project_id).order_by(ApiKey.created_at)
    )
    return [KeyOut.model_validate(r) for r in rows]


@router.post(
    "/{key_id}/revoke",
    response_model=KeyOut,
    description="409 for the project's last usable admin key: a project keeps one.",
)
def revoke_key(key_id: str, session: SessionDep, key: AdminKey) -> KeyOut:
    row = session.get(ApiKey, key_id)
    if row is None or row.project_id != key.project_id:
        raise NotFound(f"API key {key_id!r} not found", field="key_id")
    if row.revoked_at is None and [k.id for k in live_admin_keys(session, key.project_id)] == [
        row.id
    ]:
        raise Conflict(
            "this is the project's last usable admin key; create another admin key first",
            field="key_id",
        )
    row.revoked_at = row.revoked_at or utcnow()
    session.flush()
    return KeyOut.model_validate(row)
