"""JSONL uploads: one validated row per non-blank line, errors naming the line and field.

Each line is parsed with the strict loader (:func:`charter.core.documents.load_json`:
no NaN, duplicate keys, lone surrogates or NUL, bounded depth, strings and
numbers), then validated by the caller's ``parse_line`` on the Python value.
A body can be parsed whole (:func:`parse_lines`) or as it streams in
(:func:`body_chunks` into :func:`parse_stream`), with the same errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import anyio.from_thread
from pydantic import ValidationError
from starlette.requests import Request

from charter.core.documents import Bounds, DocumentError, load_json
from charter.errors import Invalid, TooLarge
from charter.settings import Settings

T = TypeVar("T")

MAX_LINE_BYTES = Settings.model_fields["max_jsonl_line_bytes"].default
"""The default line limit, for callers that do not pass the settings' own."""
BLOCK_BYTES = 1 << 20

MEDIA_TYPES = frozenset(
    {
        "",  # no Content-Type: the body is read as JSONL
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
        "application/json-lines",
        "application/json",
        "text/plain",
    }
)


def check_media_type(content_type: str) -> None:
    """A JSONL body may be sent as NDJSON, JSON Lines, JSON (one object) or plain text."""
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type not in MEDIA_TYPES:
        raise Invalid(
            f"Content-Type {media_type!r} is not JSONL; send application/x-ndjson",
            field="Content-Type",
        )


def body_chunks(request: Request, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The request body, for code running in a worker thread (``run_in_threadpool``).

    The body is read on the event loop and handed over in blocks of about
    ``block_bytes``, so the thread hops once per block, not once per network read.
    Only one block is in memory at a time: uvicorn stops reading the socket while
    the thread is busy, so a client can never send faster than rows are stored.
    """
    stream = request.stream()

    async def gather() -> bytes:
        parts: list[bytes] = []
        size = 0
        async for part in stream:  # leaving the loop early keeps the stream open
            parts.append(part)
            size += len(part)
            if size >= block_bytes:
                break
        return b"".join(parts)

    while block := anyio.from_thread.run(gather):
        yield block


def split_lines(chunks: Iterable[bytes], max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    """``(number, line)`` for every line of a body that arrives in chunks, split and
    numbered exactly as ``bytes.splitlines`` splits the whole body (``\\n``, ``\\r\\n``
    and a lone ``\\r`` end a line). A line still unfinished at the end of a chunk and
    already over ``max_line_bytes`` is 413 at once, so no line is held past the limit.
    """
    number = 0
    pending = b""
    for chunk in chunks:
        data = pending + chunk if pending else chunk
        # A final "\r" may be the first half of "\r\n": it waits for the next chunk.
        end = len(data) - 1 if data.endswith(b"\r") else len(data)
        cut = max(data.rfind(b"\n", 0, end), data.rfind(b"\r", 0, end)) + 1
        if cut:
            for line in data[:cut].splitlines():
                number += 1
                yield number, line
        pending = data[cut:]
        if len(pending) - pending.endswith(b"\r") > max_line_bytes:
            raise TooLarge(
                f"line {number + 1} is more than {max_line_bytes} bytes long; the limit is "
                f"{max_line_bytes} bytes",
                field=f"line {number + 1}",
            )
    for line in pending.splitlines():
        number += 1
        yield number, line


def parse_stream(
    chunks: Iterable[bytes],
    parse_line: Callable[[Any], T],
    max_rows: int,
    what: str,
    *,
    bounds: Bounds = Bounds(),
    max_line_bytes: int = MAX_LINE_BYTES,
) -> Iterator[T]:
    """``parse_line`` on the JSON value of every non-blank line, yielded as each line
    is read; at most ``max_rows`` rows.

    A line over ``max_line_bytes`` is 413; one the strict loader refuses, or on which
    ``parse_line`` raises pydantic's ``ValidationError``, is ``Invalid`` naming the
    line (``field="line N"``) and, in the detail, the place inside it. ``what`` names
    the upload in the too-many-rows error ("more than N rows in one <what>"). A body
    without rows is ``Invalid`` once the last chunk has been read.
    """
    rows = 0
    for number, line in split_lines(chunks, max_line_bytes):
        if len(line) > max_line_bytes:
            raise TooLarge(
                f"line {number} is {len(line)} bytes long; the limit is {max_line_bytes} bytes",
                field=f"line {number}",
            )
        if not line or line.isspace():
            continue
        if rows >= max_rows:
            raise Invalid(f"more than {max_rows} rows in one {what}", field="body")
        try:
            row = parse_line(load_json(line, bounds))
        except DocumentError as exc:
            where = f"{exc.path}: " if exc.path else ""
            raise Invalid(f"line {number}: {where}{exc}", field=f"line {number}") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            detail = f"line {number}: {where + ': ' if where else ''}{first['msg']}"
            raise Invalid(detail, field=f"line {number}") from exc
        rows += 1
        yield row
    if not rows:
        raise Invalid("the upload has no rows", field="body")


def parse_lines(
    body: bytes,
    parse_line: Callable[[Any], T],
    max_rows: int,
    what: str,
    *,
    bounds: Bounds = Bounds(),
    max_line_bytes: int = MAX_LINE_BYTES,
) -> list[T]:
    """Every row of a body already in memory (:func:`parse_stream`, same errors)."""
    return list(
        parse_stream(
            (body,), parse_line, max_rows, what, bounds=bounds, max_line_bytes=max_line_bytes
        )
    )
