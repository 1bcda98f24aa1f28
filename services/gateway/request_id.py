"""Request ids: every answer carries ``X-Request-ID`` and every log line of the request.

A pure ASGI wrapper around the whole app, outside Starlette's error middleware, so a
500 carries the header too and the error's log line has the id. An incoming id is kept
when it is short and made of safe characters (a proxy's or a client's own); otherwise,
or when there is none, a fresh one is made.
"""

from __future__ import annotations

import re
import uuid

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower().encode()
MAX_LENGTH = 128
_VALID = re.compile(rb"[A-Za-z0-9._:\-]{1,%d}" % MAX_LENGTH)


def request_id(scope: Scope) -> str:
    """The request's valid ``X-Request-ID``, else a fresh 32-hex-digit one."""
    for name, value in scope["headers"]:
        if name == _HEADER_KEY:
            return value.decode() if _VALID.fullmatch(value) else uuid.uuid4().hex
    return uuid.uuid4().hex


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        header = (_HEADER_KEY, rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        tokens = bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            reset_contextvars(**tokens)


class CharterAPI(FastAPI):
    """FastAPI with the request id outermost: middleware added with ``add_middleware``
    sits inside Starlette's error middleware, whose 500 would go out without it."""

    def build_middleware_stack(self) -> ASGIApp:
        return RequestIdMiddleware(super().build_middleware_stack())
