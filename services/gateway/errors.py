"""One renderer for every error: ``{"error": code, "detail": message, "field": ...}``."""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException

from charter.errors import CharterError, Conflict, Invalid, Unavailable


def error_response(exc: CharterError) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.code, "detail": exc.detail}
    if exc.field:
        body["field"] = exc.field
    headers = {"Retry-After": "5"} if exc.status_code == 503 else None
    return JSONResponse(body, status_code=exc.status_code, headers=headers)


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
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(
            {"error": code, "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
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

    @app.exception_handler(OperationalError)
    async def _operational(_: Request, exc: OperationalError) -> JSONResponse:
        return error_response(Unavailable("database unavailable; retry shortly"))
