"""How a dashboard request is admitted: a session cookie instead of an API key header.

:class:`DashboardRoute` is the API's unit of work (admission control, one session,
one commit, after-commit hooks) with its authentication swapped: the
``charter_session`` cookie names a live session of a live key with the read scope,
and the request counts against that key's read rate limit. A state-changing request
must come from a page of this gateway (``Origin``, else ``Referer``) and carry the
session's synchroniser token (:func:`check_csrf`). Errors are pages, not JSON: a
page request without a session is sent to the login form.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from charter import keys
from charter.db.models import ApiKey
from charter.errors import Forbidden, Invalid
from services.gateway.dashboard import rendering, service
from services.gateway.deps import check_scope
from services.gateway.errors import validation_response
from services.gateway.unit_of_work import UnitOfWorkRoute

COOKIE = "charter_session"


@dataclass(frozen=True)
class Viewer:
    """Who a page is shown to, read once at admission: pages (error pages after a
    rollback included) render it without touching the database again."""

    project_id: str
    key_name: str
    scopes: frozenset[str]
    csrf: str


SAFE_METHODS = frozenset({"GET", "HEAD"})
_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])


def public(endpoint: _Endpoint) -> _Endpoint:
    """Mark an endpoint that needs no session (the login form and its POST)."""
    endpoint.dashboard_public = True  # type: ignore[attr-defined]
    return endpoint


def _origin(url: str) -> tuple[str, str] | None:
    parts = urlsplit(url)
    return (parts.scheme, parts.netloc) if parts.scheme and parts.netloc else None


def check_origin(request: Request) -> None:
    """A state-changing request must come from this gateway's own pages (login CSRF
    included): ``Origin`` must be ours, or, where a browser sent none, ``Referer``."""
    ours = (request.url.scheme, request.url.netloc)
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        if _origin(origin) != ours:
            raise Forbidden(f"cross-origin request refused (Origin {origin!r})", field="Origin")
        return
    referer = request.headers.get("referer")
    if referer is None or _origin(referer) != ours:
        raise Forbidden(
            "cross-origin request refused: send it from a dashboard page "
            "(no same-origin Origin or Referer header)",
            field="Origin",
        )


def check_csrf(request: Request, submitted: str | None) -> None:
    """The form's token must be this session's synchroniser token."""
    viewer: Viewer = request.state.viewer
    if not submitted or not hmac.compare_digest(submitted.encode(), viewer.csrf.encode()):
        raise Forbidden(
            "the form's CSRF token is missing or stale: reload the page and try again",
            field="csrf",
        )


def set_cookie(request: Request, response: Response, token: str, max_age: int) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=max_age,
        path=rendering.PREFIX,
        httponly=True,
        samesite="strict",
        # uvicorn's --proxy-headers (CHARTER_TRUSTED_PROXIES) sets the scheme from a
        # trusted proxy's X-Forwarded-Proto, so this is right behind TLS termination too.
        secure=request.url.scheme == "https",
    )


def clear_cookie(request: Request, response: Response) -> None:
    response.delete_cookie(
        COOKIE,
        path=rendering.PREFIX,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _wants_fragment(request: Request) -> bool:
    return request.query_params.get("fragment") == "1"


def _error_page(request: Request, response: Response) -> Response:
    """The API's ``{"error", "detail", "field"}`` answer, shown as a page."""
    try:
        body = json.loads(bytes(response.body))
    except ValueError:
        return response
    if not isinstance(body, dict) or "detail" not in body:
        return response
    if response.status_code == 401 and request.method in SAFE_METHODS:
        if _wants_fragment(request):
            return response  # the poller sends the browser to the login form
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        redirect = RedirectResponse(
            f"{rendering.PREFIX}/login?next={quote(target, safe='')}", status_code=303
        )
        clear_cookie(request, redirect)
        return redirect
    page = rendering.page(request, "error.html", status_code=response.status_code, error=body)
    if "Retry-After" in response.headers:  # 429 and 503 say when to come back
        page.headers["Retry-After"] = response.headers["Retry-After"]
    return page


class DashboardRoute(UnitOfWorkRoute):
    def _admit(self, request: Request, session: Session) -> ApiKey:
        if "idempotency-key" in request.headers:
            raise Invalid("the dashboard does not take Idempotency-Key", field="Idempotency-Key")
        if request.method not in SAFE_METHODS:
            check_origin(request)
        row, key = service.resolve(session, request.cookies.get(COOKIE))
        request.app.state.rate_limiter.hit(key.id, "read")
        check_scope(key, "read")
        request.state.viewer = Viewer(
            project_id=key.project_id,
            key_name=key.name or key.prefix,
            scopes=frozenset(keys.granted(key.scopes)),
            csrf=row.csrf_token,
        )
        return key

    async def _handle(
        self,
        request: Request,
        session: Session,
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]],
    ) -> Response:
        if not getattr(self.endpoint, "dashboard_public", False):
            return await super()._handle(request, session, endpoint)
        if request.method not in SAFE_METHODS:
            check_origin(request)
        request.state.viewer = None
        await request.body()  # read here, as the API's routes do: endpoints parse it cached
        response = await endpoint(request)
        if response.status_code >= 400:
            await run_in_threadpool(session.rollback)
            return response
        await run_in_threadpool(self._commit, request, session, None, "")
        return response

    async def _unit_of_work(
        self, request: Request, endpoint: Callable[[Request], Coroutine[Any, Any, Response]]
    ) -> Response:
        try:
            response = await super()._unit_of_work(request, endpoint)
        except RequestValidationError as exc:  # a bad query value: a page naming the field
            response = validation_response(exc)
        if response.status_code >= 400 and response.media_type == "application/json":
            response = _error_page(request, response)
        return rendering.secure(response)
