"""Request-body size limit. Neither uvicorn nor Starlette has one.

Rejects a declared ``Content-Length`` over the limit at once, and counts the
bytes of chunked bodies as they stream in, answering 413 either way. Routes that
stream their body instead of holding it (``streamed``: path -> limit, for POST) get
their own, larger limit, except with an ``Idempotency-Key``, whose fingerprint
needs the whole body in memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _TooLarge(HTTPException):
    """An HTTPException so that FastAPI's body parsing re-raises it (rather than
    turning it into a 400) and the app's handler answers 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body exceeds {max_bytes} bytes")


class BodySizeLimit:
    def __init__(
        self, app: ASGIApp, max_bytes: int, streamed: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.streamed = dict(streamed or {})

    def _limit(self, scope: Scope) -> int:
        streams = scope.get("method") == "POST" and scope.get("path") in self.streamed
        if streams and not any(name == b"idempotency-key" for name, _ in scope["headers"]):
            return self.streamed[scope["path"]]
        return self.max_bytes

    async def _reject(self, send: Send, max_bytes: int) -> None:
        body = json.dumps(
            {"error": "too_large", "detail": f"request body exceeds {max_bytes} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self._limit(scope)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = max_bytes + 1
                if declared > max_bytes:
                    await self._reject(send, max_bytes)
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _TooLarge(max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send, max_bytes)
