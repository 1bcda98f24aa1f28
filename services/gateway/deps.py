"""Dependency aliases, declared once and used by every endpoint."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.orm import Session

from charter import keys
from charter.db.models import ApiKey
from charter.errors import Forbidden
from charter.settings import Settings


# These are ``async def``: they only read ``request.state``, and FastAPI would run a
# plain ``def`` dependency in the threadpool (a GIL hand-off each, per request).
async def _session(request: Request) -> Session:
    return request.state.session  # opened by UnitOfWorkRoute


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _key(request: Request) -> ApiKey:
    return request.state.api_key  # authenticated by UnitOfWorkRoute


SessionDep = Annotated[Session, Depends(_session)]
SettingsDep = Annotated[Settings, Depends(_settings)]
CurrentKey = Annotated[ApiKey, Depends(_key)]


def check_scope(key: ApiKey, scope: str) -> None:
    if scope not in keys.granted(key.scopes):
        raise Forbidden(f"this API key lacks the '{scope}' scope")


def require(scope: str) -> Callable[[ApiKey], Awaitable[ApiKey]]:
    """The key, if it holds ``scope``. ``UnitOfWorkRoute`` reads ``required_scope`` to
    rate-limit and authorise before anything else (replays, body parsing) happens."""

    async def check(key: CurrentKey) -> ApiKey:
        check_scope(key, scope)
        return key

    check.required_scope = scope  # type: ignore[attr-defined]
    return check


AdminKey = Annotated[ApiKey, Depends(require("admin"))]
SubmitKey = Annotated[ApiKey, Depends(require("submit"))]
ReadKey = Annotated[ApiKey, Depends(require("read"))]
TrainKey = Annotated[ApiKey, Depends(require("train"))]
ClassifyKey = Annotated[ApiKey, Depends(require("classify"))]

Cursor = Annotated[str | None, Query(description="Opaque cursor from the previous page.")]
Limit = Annotated[int, Query(ge=1, le=1000, description="Page size.")]
