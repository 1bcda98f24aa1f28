"""Project objects kept as immutable ``name@version`` rows (gold sets, public inputs):
the latest version of a name, and a ref resolved to its row."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from charter.core import refs
from charter.errors import CharterError, NotFound

R = TypeVar("R")


def latest(session: Session, model: type[R], project_id: str, name: str) -> R | None:
    table: Any = model
    query = select(model).filter_by(project_id=project_id, name=name)
    return session.scalar(query.order_by(table.version.desc()).limit(1))


def resolve(
    session: Session,
    model: type[R],
    project_id: str,
    ref: str,
    *,
    name_pattern: str,
    what: str,
    field: str,
    malformed: type[CharterError],
) -> R:
    """``name`` (the latest version) or ``name@version``; ``malformed`` for a ref that is
    neither, a 404 naming ``field`` for one the project does not have."""
    try:
        name, version = refs.parse_ref(ref, name_pattern, what=what)
    except ValueError as exc:
        raise malformed(str(exc), field=field) from exc
    if version is None:
        row = latest(session, model, project_id, name)
    else:
        query = select(model).filter_by(project_id=project_id, name=name, version=version)
        row = session.scalar(query)
    if row is None:
        raise NotFound(f"{what} {ref!r} not found", field=field)
    return row
