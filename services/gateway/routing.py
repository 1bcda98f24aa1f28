"""One unit of work per request: authenticate, run, commit once, then publish.

Every ``/v1`` route uses :class:`UnitOfWorkRoute`. It opens the session the
endpoint's dependencies receive, authenticates the key, replays or records
``Idempotency-Key`` responses in the same transaction as the endpoint's writes
(so a retry can never observe half a request), commits once, and only then runs
the after-commit hooks (publishing to the broker). Services only flush.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from charter.db.models import IdempotencyRecord
from charter.errors import CharterError, Conflict, Invalid, Unavailable
from services.gateway.auth import authenticate
from services.gateway.errors import error_response

MAX_IDEMPOTENCY_KEY = 255


def after_commit(request: Request, hook: Callable[[], None]) -> None:
    """Run ``hook`` once the request's transaction has committed."""
    request.state.after_commit.append(hook)


def _fingerprint(request: Request, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (request.method, request.url.path, str(request.url.query)):
        digest.update(part.encode() + b"\0")
    digest.update(request.headers.get("content-type", "").encode() + b"\0")
    digest.update(body)
    return digest.hexdigest()


def _replay(session: Session, project_id: str, key: str, fingerprint: str) -> Response | None:
    record = session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.project_id == project_id, IdempotencyRecord.key == key
        )
    )
    if record is None:
        return None
    if record.request_hash != fingerprint:
        raise Invalid(
            "Idempotency-Key was already used with a different request body",
            field="Idempotency-Key",
        )
    return Response(
        record.response_body,
        status_code=record.status_code,
        media_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )


class UnitOfWorkRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = super().get_route_handler()

        async def handle(request: Request) -> Response:
            sessions = request.app.state.sessions
            session: Session = sessions()
            request.state.session = session
            request.state.after_commit = []
            try:
                return await self._handle(request, session, endpoint)
            except CharterError as exc:
                await run_in_threadpool(session.rollback)
                return error_response(exc)
            except OperationalError as exc:
                await run_in_threadpool(session.rollback)
                return error_response(Unavailable(f"database unavailable: {exc.orig}"))
            finally:
                await run_in_threadpool(session.close)

        return handle

    async def _handle(
        self,
        request: Request,
        session: Session,
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]],
    ) -> Response:
        settings = request.app.state.settings
        request.state.api_key = await run_in_threadpool(
            authenticate, session, request.headers, request.query_params, settings.secret_key
        )
        project_id = request.state.api_key.project_id
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        fingerprint = ""
        if key is not None:
            if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
                raise Invalid("Idempotency-Key must be 1-255 characters", field="Idempotency-Key")
            fingerprint = _fingerprint(request, await request.body())
            replay = await run_in_threadpool(_replay, session, project_id, key, fingerprint)
            if replay is not None:
                return replay
        response = await endpoint(request)
        if response.status_code >= 400:
            await run_in_threadpool(session.rollback)
            return response
        if key is not None:
            session.add(
                IdempotencyRecord(
                    project_id=project_id,
                    key=key,
                    request_hash=fingerprint,
                    status_code=response.status_code,
                    response_body=bytes(response.body).decode(),
                )
            )
        try:
            await run_in_threadpool(session.commit)
        except IntegrityError as exc:
            await run_in_threadpool(session.rollback)
            if key is not None:  # a concurrent retry with the same key won the race
                replay = await run_in_threadpool(_replay, session, project_id, key, fingerprint)
                if replay is not None:
                    return replay
            raise Conflict("a concurrent request changed the same object; retry") from exc
        for hook in request.state.after_commit:
            await run_in_threadpool(hook)
        return response
