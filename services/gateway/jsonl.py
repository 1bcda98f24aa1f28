"""JSONL uploads: one validated row per non-blank line, errors naming the line and field."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import ValidationError

from charter.errors import Invalid

T = TypeVar("T")


def parse_lines(body: bytes, parse_line: Callable[[bytes], T], max_rows: int, what: str) -> list[T]:
    """``parse_line`` on every non-blank line of ``body``; at most ``max_rows`` rows.

    ``parse_line`` raises pydantic's ``ValidationError`` on a bad line; it becomes
    ``Invalid`` naming the line and the first failing field. ``what`` names the
    upload in the too-many-rows error ("more than N rows in one <what>").
    """
    rows: list[T] = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        if len(rows) >= max_rows:
            raise Invalid(f"more than {max_rows} rows in one {what}", field="body")
        try:
            rows.append(parse_line(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            detail = f"line {number}: {where + ': ' if where else ''}{first['msg']}"
            raise Invalid(detail, field=f"line {number}") from exc
    if not rows:
        raise Invalid("the upload has no rows", field="body")
    return rows
