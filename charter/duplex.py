"""Full-duplex HTTP/1.1 streams: an answer read while its request is still being sent.

A stream guard answers each token of a response as it arrives, so the caller must be
able to read answer line ``i`` before it sends token ``i + 1``. HTTP/1.1 allows it
(the server may answer before the request body ends), but common clients send the whole
body first, and Starlette's ``StreamingResponse`` (before ASGI 2.4) listens for the
disconnect on ``receive`` while it streams, swallowing a body still arriving.

- :func:`post` is a client on h11 (which uvicorn and httpx use underneath): it sends the
  body from one task and reads the answer from another.
- :class:`DuplexResponse` is a streamed answer whose generator is the request body's only
  reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import h11
from starlette.responses import StreamingResponse


async def lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The non-blank lines of a body (each with its newline), as they arrive."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield line + b"\n"
    if pending.strip():
        yield pending + b"\n"


class DuplexResponse(StreamingResponse):
    """A streamed answer written while the request body is still being read: the answer's
    generator reads the body itself, and sees a disconnect as the body's end."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.stream_response(send)
        if self.background is not None:
            await self.background()


class Unreachable(OSError):
    """The server could not be reached, or broke off before its answer's head."""


@dataclass
class Answer:
    """The head of an answer; :meth:`lines`/``body`` read the rest as it arrives.
    Reading it to the end, or :meth:`aclose`, ends the exchange."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]
    aclose: Callable[[], Awaitable[None]]

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.body])


async def post(
    url: str,
    body: AsyncIterator[bytes],
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> Answer:
    """POST ``body`` (chunked, sent as it is produced) to ``url``; the answer as soon as
    its head arrives. ``timeout`` bounds each wait for the server. The body stops being
    sent when the answer ends (the server has said all it will). ``Unreachable`` when no
    answer's head comes."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname or "localhost"
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                host, port, ssl=ssl.create_default_context() if secure else None
            ),
            timeout,
        )
    except (OSError, TimeoutError) as exc:
        raise Unreachable(f"{host}:{port}: {exc}") from exc
    connection = h11.Connection(h11.CLIENT)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    head = [("host", parts.netloc), ("transfer-encoding", "chunked"), *(headers or {}).items()]

    async def send_body() -> None:
        try:
            async for chunk in body:
                if chunk:
                    writer.write(connection.send(h11.Data(data=chunk)) or b"")
                    await writer.drain()
            writer.write(connection.send(h11.EndOfMessage()) or b"")
            await writer.drain()
        except (OSError, h11.LocalProtocolError):
            pass  # the server answered and closed: nothing more to send

    async def next_event() -> Any:
        while True:
            event = connection.next_event()
            if event is not h11.NEED_DATA:
                return event
            connection.receive_data(await asyncio.wait_for(reader.read(65536), timeout))

    closed = False

    async def aclose() -> None:
        nonlocal closed
        if closed:
            return
        closed = True
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    writer.write(connection.send(h11.Request(method="POST", target=target, headers=head)) or b"")
    sender = asyncio.create_task(send_body())
    try:
        event = await next_event()
    except (OSError, TimeoutError, h11.RemoteProtocolError) as exc:
        await aclose()
        raise Unreachable(f"{host}:{port}: no answer ({type(exc).__name__})") from exc
    if not isinstance(event, h11.Response):
        await aclose()
        raise Unreachable(f"{host}:{port}: no answer ({type(event).__name__})")

    async def answer_body() -> AsyncIterator[bytes]:
        try:
            while True:
                event = await next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return
        finally:
            await aclose()

    return Answer(
        event.status_code,
        {k.decode().lower(): v.decode() for k, v in event.headers},
        answer_body(),
        aclose,
    )
