"""A project's templates, feedback and critique: pushed as new immutable versions,
resolved by ref. Both kinds share everything but their table and their core module,
which :class:`Kind` names."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from charter.core import critique_templates, feedback_templates
from charter.core.critique_templates import CritiqueTemplate
from charter.core.feedback_templates import FeedbackTemplate, TemplateInvalid
from charter.db.models import CritiqueTemplateVersion, FeedbackTemplateVersion
from charter.errors import CharterError, Conflict, Invalid, NotFound
from services.gateway.templates.schemas import CritiqueTemplateCreate, TemplateCreate

TemplateRow = FeedbackTemplateVersion | CritiqueTemplateVersion


@dataclass(frozen=True)
class Kind:
    what: str
    """How errors name it: "feedback template"."""
    row: type[FeedbackTemplateVersion] | type[CritiqueTemplateVersion]
    built_in: Mapping[str, Any]
    from_spec: Callable[[str, int, dict[str, Any]], Any]
    spec_of: Callable[[Any], dict[str, object]]
    path: str
    """Where a project pushes its own."""


FEEDBACK = Kind(
    "feedback template", FeedbackTemplateVersion, feedback_templates.BUILT_IN,
    feedback_templates.from_spec, feedback_templates.spec_of, "/v1/templates",
)  # fmt: skip
CRITIQUE = Kind(
    "critique template", CritiqueTemplateVersion, critique_templates.BUILT_IN,
    critique_templates.from_spec, critique_templates.spec_of, "/v1/critique-templates",
)  # fmt: skip


def build_feedback(body: TemplateCreate) -> FeedbackTemplate:
    """The template the body describes, checked as a worker would use it."""
    spec = body.model_dump(exclude={"name"})
    try:
        template = feedback_templates.from_spec(body.name, 1, spec)
        template.render(  # every variable given: a template that renders here renders anywhere
            conversation="Human: hi", messages=[{"role": "user", "content": "hi"}],
            principle="p", response_a="a", response_b="b", instruction="i",
        )  # fmt: skip
    except TemplateInvalid as exc:
        raise Invalid(str(exc), field=f"body.{exc.field}") from exc
    return template


def build_critique(body: CritiqueTemplateCreate) -> CritiqueTemplate:
    """The critique template the body describes, rendered once with every variable."""
    spec = body.model_dump(exclude={"name"})
    known = {
        "conversation": "Human: hi", "messages": [{"role": "user", "content": "hi"}],
        "response": "r", "critique_request": "c",
    }  # fmt: skip
    try:
        template = critique_templates.from_spec(body.name, 1, spec)
        template.render_critique(**known)
        template.render_revision(**known, critique="c", revision_request="r")
    except TemplateInvalid as exc:
        raise Invalid(str(exc), field=f"body.{exc.field}") from exc
    return template


def push(
    session: Session,
    project_id: str,
    template: FeedbackTemplate | CritiqueTemplate,
    kind: Kind = FEEDBACK,
) -> tuple[TemplateRow, bool]:
    """A new version when the template changed; the existing one when it did not."""
    name = template.name
    if name in kind.built_in:
        raise Conflict(f"{name!r} is a shipped template's name; choose another", field="name")
    spec = kind.spec_of(template)
    digest = template.sha256()  # the version is not in the spec: same content, same hash
    rows = select(kind.row).filter_by(project_id=project_id, name=name)
    latest = session.scalar(rows.order_by(kind.row.version.desc()).limit(1))
    if latest is not None and latest.spec == spec:
        return latest, False
    version = 1 if latest is None else latest.version + 1  # the latest is the highest
    row = kind.row(project_id=project_id, name=name, version=version, spec=spec, sha256=digest)
    session.add(row)
    session.flush()
    return row, True


def find(
    session: Session,
    project_id: str,
    ref: str,
    *,
    field: str,
    malformed: type[CharterError] = Invalid,
    kind: Kind = FEEDBACK,
) -> TemplateRow:
    """``name`` (latest) or ``name@version`` of the project's own templates. A ref that
    cannot name any template raises ``malformed``: 422 in a body, 404 in a path."""
    try:
        name, version = feedback_templates.parse_ref(ref)
    except ValueError as exc:
        raise malformed(str(exc), field=field) from exc
    query = select(kind.row).filter_by(project_id=project_id, name=name)
    if version is None:
        query = query.order_by(kind.row.version.desc()).limit(1)
    else:
        query = query.filter_by(version=version)
    row = session.scalar(query)
    if row is None:
        known = sorted(kind.built_in)
        raise NotFound(
            f"{kind.what} {ref!r} not found (shipped: {known}, or push your own to {kind.path})",
            field=field,
        )
    return row


def pin(session: Session, project_id: str, ref: str, *, field: str, kind: Kind = FEEDBACK) -> str:
    """What a job records: a shipped name as it is, else the exact ``name@version``."""
    if ref in kind.built_in:
        return ref
    row = find(session, project_id, ref, field=field, kind=kind)
    return f"{row.name}@{row.version}"


def template_of(row: TemplateRow, kind: Kind = FEEDBACK) -> Any:
    return kind.from_spec(row.name, row.version, row.spec)


def resolve(session: Session, project_id: str, ref: str, kind: Kind = FEEDBACK) -> Any:
    """A shipped template, or the project's own (404 naming ``ref``)."""
    if ref in kind.built_in:
        return kind.built_in[ref]
    return template_of(
        find(session, project_id, ref, field="ref", malformed=NotFound, kind=kind), kind
    )


def listing(session: Session, project_id: str, kind: Kind = FEEDBACK) -> list[TemplateRow]:
    query = select(kind.row).filter_by(project_id=project_id)
    return list(session.scalars(query.order_by(kind.row.name, kind.row.version)))
