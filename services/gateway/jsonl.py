"""JSONL uploads: one validated row per non-blank line, errors naming the line and field.

Each line is parsed with the strict loader (:func:`charter.core.documents.load_json`:
no NaN, duplicate keys, lone surrogates or NUL, bounded depth, strings and
numbers), then validated by the caller's ``parse_line`` on the Python value.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import ValidationError

from charter.core.documents import Bounds, DocumentError, load_json
from charter.errors import Invalid, TooLarge
from charter.settings import Settings

T = TypeVar("T")

MAX_LINE_BYTES = Settings.model_fields["max_jsonl_line_bytes"].default
"""The default line limit, for callers that do not pass the settings' own."""

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


def parse_lines(
    body: bytes,
    parse_line: Callable[[Any], T],
    max_rows: int,
    what: str,
    *,
    bounds: Bounds = Bounds(),
    max_line_bytes: int = MAX_LINE_BYTES,
) -> list[T]:
    """``parse_line`` on the JSON value of every non-blank line; at most ``max_rows`` rows.

    A line over ``max_line_bytes`` is 413; one the strict loader refuses, or on which
    ``parse_line`` raises pydantic's ``ValidationError``, is ``Invalid`` naming the
    line (``field="line N"``) and, in the detail, the place inside it. ``what`` names
    the upload in the too-many-rows error ("more than N rows in one <what>").
    """
    rows: list[T] = []
    for number, line in enumerate(body.splitlines(), start=1):
        if len(line) > max_line_bytes:
            raise TooLarge(
                f"line {number} is {len(line)} bytes long; the limit is {max_line_bytes} bytes",
                field=f"line {number}",
            )
        if not line or line.isspace():
            continue
        if len(rows) >= max_rows:
            raise Invalid(f"more than {max_rows} rows in one {what}", field="body")
        try:
            rows.append(parse_line(load_json(line, bounds)))
        except DocumentError as exc:
            where = f"{exc.path}: " if exc.path else ""
            raise Invalid(f"line {number}: {where}{exc}", field=f"line {number}") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            detail = f"line {number}: {where + ': ' if where else ''}{first['msg']}"
            raise Invalid(detail, field=f"line {number}") from exc
    if not rows:
        raise Invalid("the upload has no rows", field="body")
    return rows
