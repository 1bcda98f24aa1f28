"""Constitution versions: immutable, numbered, deduplicated by content hash."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from charter.core.constitution import Constitution, ConstitutionDiff, diff, parse_ref
from charter.db.models import Constitution as ConstitutionRow
from charter.db.models import ConstitutionVersion
from charter.errors import Invalid, NotFound


def validate(content: Any) -> Constitution:
    if not isinstance(content, dict):
        raise Invalid(
            "a constitution must be a mapping (JSON object or YAML mapping)", field="body"
        )
    try:
        return Constitution.model_validate(content)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Invalid(f"{where}: {first['msg']}", field=where) from exc


def push(
    session: Session, project_id: str, constitution: Constitution
) -> tuple[ConstitutionVersion, bool]:
    """The version holding this content: existing if identical, else the next number."""
    row = session.scalar(
        select(ConstitutionRow).where(
            ConstitutionRow.project_id == project_id, ConstitutionRow.name == constitution.name
        )
    )
    if row is None:
        row = ConstitutionRow(project_id=project_id, name=constitution.name)
        session.add(row)
        session.flush()
    digest = constitution.content_hash()
    existing = session.scalar(
        select(ConstitutionVersion).where(
            ConstitutionVersion.constitution_id == row.id,
            ConstitutionVersion.content_hash == digest,
        )
    )
    if existing is not None:
        return existing, False
    latest = session.scalar(
        select(func.max(ConstitutionVersion.version)).where(
            ConstitutionVersion.constitution_id == row.id
        )
    )
    version = ConstitutionVersion(
        constitution_id=row.id,
        version=(latest or 0) + 1,
        content=constitution.model_dump(mode="json"),
        content_hash=digest,
    )
    session.add(version)
    session.flush()
    return version, True


def resolve(
    session: Session, project_id: str, ref: str, *, field: str = "constitution"
) -> ConstitutionVersion:
    """``name`` (latest version) or ``name@version`` within the project."""
    try:
        name, number = parse_ref(ref)
    except ValueError as exc:
        raise Invalid(str(exc), field=field) from exc
    query = (
        select(ConstitutionVersion)
        .join(ConstitutionRow, ConstitutionRow.id == ConstitutionVersion.constitution_id)
        .where(ConstitutionRow.project_id == project_id, ConstitutionRow.name == name)
    )
    if number is None:
        query = query.order_by(ConstitutionVersion.version.desc()).limit(1)
    else:
        query = query.where(ConstitutionVersion.version == number)
    version = session.scalar(query)
    if version is None:
        raise NotFound(f"constitution {ref!r} not found", field=field)
    return version


def name_of(session: Session, version: ConstitutionVersion) -> str:
    return session.get_one(ConstitutionRow, version.constitution_id).name


def listing(session: Session, project_id: str) -> list[tuple[str, int, Any]]:
    return [
        (name, latest, updated)
        for name, latest, updated in session.execute(
            select(
                ConstitutionRow.name,
                func.max(ConstitutionVersion.version),
                func.max(ConstitutionVersion.created_at),
            )
            .join(ConstitutionVersion, ConstitutionVersion.constitution_id == ConstitutionRow.id)
            .where(ConstitutionRow.project_id == project_id)
            .group_by(ConstitutionRow.name)
            .order_by(ConstitutionRow.name)
        )
    ]


def versions(session: Session, project_id: str, name: str) -> list[ConstitutionVersion]:
    rows = list(
        session.scalars(
            select(ConstitutionVersion)
            .join(ConstitutionRow, ConstitutionRow.id == ConstitutionVersion.constitution_id)
            .where(ConstitutionRow.project_id == project_id, ConstitutionRow.name == name)
            .order_by(ConstitutionVersion.version)
        )
    )
    if not rows:
        raise NotFound(f"constitution {name!r} not found", field="name")
    return rows


def compare(
    session: Session, project_id: str, name: str, before: int, after: int
) -> ConstitutionDiff:
    old = resolve(session, project_id, f"{name}@{before}", field="from_version")
    new = resolve(session, project_id, f"{name}@{after}", field="to_version")
    return diff(Constitution.model_validate(old.content), Constitution.model_validate(new.content))
