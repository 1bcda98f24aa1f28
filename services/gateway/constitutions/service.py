"""Constitution versions: immutable, numbered, deduplicated by content hash."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from charter.core.constitution import Constitution, ConstitutionDiff, diff, parse_ref
from charter.db.models import Constitution as ConstitutionRow
from charter.db.models import ConstitutionVersion
from charter.errors import CharterError, Invalid, NotFound, TooLarge

# A pushed body may be larger than its canonical form (indentation, comments, YAML
# block scalars), but not by more than this factor; a larger one is refused unparsed,
# so no client can make the gateway parse megabytes of YAML (pure Python, ~MB/s).
BODY_SLACK = 4


def check_body_size(body: bytes, max_bytes: int) -> None:
    """413 for a body too large to hold a constitution of at most ``max_bytes``."""
    if len(body) > BODY_SLACK * max_bytes:
        raise TooLarge(
            f"a constitution document may be at most {BODY_SLACK * max_bytes} bytes "
            f"({max_bytes} bytes in canonical form); this one is {len(body)}",
            field="body",
        )


def validate(content: Any, *, max_bytes: int | None = None) -> Constitution:
    """The constitution in a parsed document; 413 if its canonical JSON (what is
    stored) exceeds ``max_bytes``."""
    if not isinstance(content, dict):
        raise Invalid(
            "a constitution must be a mapping (JSON object or YAML mapping)", field="body"
        )
    try:
        constitution = Constitution.model_validate(content)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise Invalid(f"{where}: {first['msg']}", field=where) from exc
    if max_bytes is not None:
        size = len(constitution.canonical_json().encode())
        if size > max_bytes:
            raise TooLarge(
                f"the constitution is {size} bytes in canonical form; the limit is "
                f"{max_bytes} bytes",
                field="body",
            )
    return constitution


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
        content=constitution.content(),
        content_hash=digest,
    )
    session.add(version)
    session.flush()
    return version, True


def resolve(
    session: Session,
    project_id: str,
    ref: str,
    *,
    field: str = "constitution",
    malformed: type[CharterError] = Invalid,
) -> ConstitutionVersion:
    """``name`` (latest version) or ``name@version`` within the project. A ref that
    cannot name any constitution raises ``malformed``: 422 in a request body, 404 in
    a path (where, as for any id, it is simply not found)."""
    try:
        name, number = parse_ref(ref)
    except ValueError as exc:
        raise malformed(str(exc), field=field) from exc
    # The constitution row comes along into the identity map: ``name_of`` then reads it
    # without a query of its own.
    query = (
        select(ConstitutionVersion, ConstitutionRow)
        .join(ConstitutionRow, ConstitutionRow.id == ConstitutionVersion.constitution_id)
        .where(ConstitutionRow.project_id == project_id, ConstitutionRow.name == name)
    )
    if number is None:
        query = query.order_by(ConstitutionVersion.version.desc()).limit(1)
    else:
        query = query.where(ConstitutionVersion.version == number)
    found = session.execute(query).first()
    if found is None:
        raise NotFound(f"constitution {ref!r} not found", field=field)
    return found[0]


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
    versions(session, project_id, name)  # 404 naming "name" for a name with no versions
    old = resolve(session, project_id, f"{name}@{before}", field="from_version")
    new = resolve(session, project_id, f"{name}@{after}", field="to_version")
    return diff(Constitution.model_validate(old.content), Constitution.model_validate(new.content))
