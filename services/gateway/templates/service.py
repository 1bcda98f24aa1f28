"""A project's feedback templates: pushed as new immutable versions, resolved by ref."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from charter.core import feedback_templates
from charter.core.feedback_templates import FeedbackTemplate, TemplateInvalid
from charter.db.models import FeedbackTemplateVersion
from charter.errors import CharterError, Conflict, Invalid, NotFound
from services.gateway.templates.schemas import TemplateCreate


def _build(body: TemplateCreate) -> FeedbackTemplate:
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


def push(
    session: Session, project_id: str, body: TemplateCreate
) -> tuple[FeedbackTemplateVersion, bool]:
    """A new version when the template changed; the existing one when it did not."""
    if body.name in feedback_templates.BUILT_IN:
        raise Conflict(f"{body.name!r} is a shipped template's name; choose another", field="name")
    template = _build(body)
    spec = feedback_templates.spec_of(template)
    digest = template.sha256()  # the version is not in the spec: same content, same hash
    same = {"project_id": project_id, "name": body.name}
    rows = select(FeedbackTemplateVersion).filter_by(**same)
    latest = session.scalar(rows.order_by(FeedbackTemplateVersion.version.desc()).limit(1))
    if latest is not None and latest.spec == spec:
        return latest, False
    version = 1 if latest is None else latest.version + 1  # the latest is the highest
    row = FeedbackTemplateVersion(
        project_id=project_id, name=body.name, version=version, spec=spec, sha256=digest
    )
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
) -> FeedbackTemplateVersion:
    """``name`` (latest) or ``name@version`` of the project's own templates. A ref that
    cannot name any template raises ``malformed``: 422 in a body, 404 in a path."""
    try:
        name, version = feedback_templates.parse_ref(ref)
    except ValueError as exc:
        raise malformed(str(exc), field=field) from exc
    query = select(FeedbackTemplateVersion).filter_by(project_id=project_id, name=name)
    if version is None:
        query = query.order_by(FeedbackTemplateVersion.version.desc()).limit(1)
    else:
        query = query.filter_by(version=version)
    row = session.scalar(query)
    if row is None:
        known = sorted(feedback_templates.BUILT_IN)
        raise NotFound(
            f"feedback template {ref!r} not found (shipped: {known}, or push your own)",
            field=field,
        )
    return row


def pin(session: Session, project_id: str, ref: str, *, field: str) -> str:
    """What a job records: a shipped name as it is, else the exact ``name@version``."""
    if ref in feedback_templates.BUILT_IN:
        return ref
    row = find(session, project_id, ref, field=field)
    return f"{row.name}@{row.version}"


def template_of(row: FeedbackTemplateVersion) -> FeedbackTemplate:
    return feedback_templates.from_spec(row.name, row.version, row.spec)


def listing(session: Session, project_id: str) -> list[FeedbackTemplateVersion]:
    query = select(FeedbackTemplateVersion).filter_by(project_id=project_id)
    return list(
        session.scalars(
            query.order_by(FeedbackTemplateVersion.name, FeedbackTemplateVersion.version)
        )
    )
