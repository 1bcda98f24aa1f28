"""One renderer for every error: ``{"error": code, "detail": message, "field": ...}``."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import Match

from charter.db.session import is_transient
from charter.errors import CharterError, Conflict, Invalid, RateLimited, Unavailable

log = logging.getLogger(__name__)


def error_response(exc: CharterError) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.code, "detail": exc.detail, "field": exc.field}
    headers: dict[str, str] | None = None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(exc.retry_after)}
    elif exc.status_code == 503:
        headers = {"Retry-After": "5"}
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


def database_unavailable(exc: BaseException) -> Unavailable | None:
    """The 503 for a database error that means "not now" rather than "not this": any
    OperationalError (connection refused or lost, the server stopping, starting or out
    of space), and whatever else the database raises for its state (it refuses writes,
    the driver found the connection closed, no pooled connection came free). None for
    the rest (a constraint, bad data, a bug). The detail names the kind of error, not
    the driver's message, which names hosts and ports."""
    if not (isinstance(exc, OperationalError | psycopg.OperationalError) or is_transient(exc)):
        return None
    orig = getattr(exc, "orig", None) or exc
    log.info("database unavailable: %s", (str(orig).strip().splitlines() or [""])[0])
    return Unavailable(f"the database is unavailable ({type(orig).__name__}); retry shortly")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path. Starlette's own 405 names only the
    first route that matched; and a literal path (``/v1/runs/claim``) shadows a
    parameterised one (``/v1/runs/{run_id}``), as a request would be routed."""
    scope = {**request.scope, "method": "GET"}
    exact: set[str] = set()
    templated: set[str] = set()
    for route in request.app.router.routes:
        methods = getattr(route, "methods", None)
        if not methods or route.matches(scope)[0] == Match.NONE:
            continue
        (templated if "{" in getattr(route, "path", "") else exact).update(methods)
    return sorted(exact or templated)


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"field": _location(e["loc"]), "message": e["msg"], "type": e["type"]} for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    detail = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return JSONResponse(
        {"error": "validation_error", "detail": detail, "field": first["field"], "errors": errors},
        status_code=422,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(CharterError)
    async def _charter(_: Request, exc: CharterError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_response(exc)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(
            {"error": code, "detail": str(exc.detail), "field": None},
            status_code=exc.status_code,
            headers=headers or None,
        )

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        return error_response(Conflict("a concurrent request changed the same object; retry"))

    @app.exception_handler(DataError)
    @app.exception_handler(psycopg.DataError)  # raised by COPY on the raw connection
    async def _data(_: Request, exc: Exception) -> JSONResponse:
        # A value the database refuses, e.g. NUL characters in PostgreSQL text or JSONB.
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return error_response(Invalid(f"a value in the request cannot be stored: {reason}"))

    @app.exception_handler(DBAPIError)
    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.Error)  # raised by COPY on the raw connection
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        unavailable = database_unavailable(exc)
        if unavailable is None:
            return await _unexpected(request, exc)
        return error_response(unavailable)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input (bad input is a CharterError or a validation error).
        # Logged with its traceback; the body names no internals, and the connection
        # is closed explicitly so a client never reuses it after a half-handled request.
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": "internal", "detail": "internal server error; it has been logged"},
            status_code=500,
            headers={"Connection": "close"},
        )
