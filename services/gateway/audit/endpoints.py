"""``/v1/audit``: read-only. No route edits or deletes an event."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated

from fastapi import APIRouter, Query

from charter.errors import Invalid
from services.gateway.audit import service
from services.gateway.audit.schemas import AuditEventOut
from services.gateway.audit.service import Outcome
from services.gateway.deps import AdminKey, Cursor, Limit, SessionDep
from services.gateway.pagination import Page
from services.gateway.unit_of_work import UnitOfWorkRoute

router = APIRouter(prefix="/v1/audit", tags=["audit"], route_class=UnitOfWorkRoute)

Text = Annotated[str | None, Query(min_length=1, max_length=255)]
Moment = Annotated[
    str | None,
    Query(
        description="An RFC 3339 date-time with its offset, e.g. 2026-12-05T10:00:00Z.",
        max_length=64,
        json_schema_extra={"format": "date-time"},
    ),
]
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def _moment(value: str | None, field: str) -> datetime | None:
    """``value`` as a UTC time; anything but an RFC 3339 date-time is a 422 naming ``field``."""
    if value is None:
        return None
    match = _RFC3339.fullmatch(value)
    try:
        if match is None:
            raise ValueError(value)
        year, month, day, hour, minute, second, fraction, zulu, sign, oh, om = match.groups()
        offset = timedelta(hours=int(oh or 0), minutes=int(om or 0))
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),  # a leap second reads as the second before it
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=timezone(offset if zulu or sign == "+" else -offset),
        )
    except ValueError:
        raise Invalid(
            f"{field} must be an RFC 3339 date-time with an offset, e.g. 2026-12-05T10:00:00Z; "
            f"got {value!r}",
            field=field,
        ) from None
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # within a day of year 1 or 9999: the window is open that side
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC)


@router.get(
    "",
    response_model=Page[AuditEventOut],
    description="The project's state-changing calls, newest first. `since` is inclusive, "
    "`until` exclusive; `object_id` matches any id the call named or created.",
)
def list_events(
    session: SessionDep,
    key: AdminKey,
    route: Text = None,
    key_prefix: Text = None,
    outcome: Outcome | None = None,
    object_id: Text = None,
    since: Moment = None,
    until: Moment = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> Page[AuditEventOut]:
    start, end = _moment(since, "since"), _moment(until, "until")
    filters = service.Filters(route, key_prefix, outcome, object_id, start, end)
    rows, next_cursor = service.page(session, key.project_id, filters, cursor, limit)
    return Page(items=[AuditEventOut.model_validate(r) for r in rows], next_cursor=next_cursor)
