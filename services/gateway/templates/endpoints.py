"""``/v1/templates``: the shipped feedback templates and a project's own."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status
from pydantic import ValidationError

from charter.core import feedback_templates, prompts
from charter.core.constitution import ComparisonPrinciple, Constitution
from charter.errors import Invalid, NotFound
from services.gateway.deps import ReadKey, SessionDep, SubmitKey
from services.gateway.templates import service
from services.gateway.templates.schemas import RenderOut, RenderRequest, TemplateCreate, TemplateOut
from services.gateway.unit_of_work import UnitOfWorkRoute

router = APIRouter(prefix="/v1/templates", tags=["templates"], route_class=UnitOfWorkRoute)


def built_in_out(template: Any, kind: service.Kind = service.FEEDBACK) -> TemplateOut:
    return TemplateOut(
        name=template.name, version=None, ref=template.name, built_in=True,
        sha256=template.sha256(), spec=kind.spec_of(template),
    )  # fmt: skip


def stored_out(row: service.TemplateRow, created: bool | None = None) -> TemplateOut:
    return TemplateOut(
        name=row.name, version=row.version, ref=f"{row.name}@{row.version}", built_in=False,
        sha256=row.sha256, spec=row.spec, created_at=row.created_at, created=created,
    )  # fmt: skip


@router.post(
    "",
    response_model=TemplateOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": TemplateOut, "description": "Unchanged: the latest version."}},
    description="A new version when the template differs from the latest of that name "
    "(201), else the latest itself (200, `created: false`). Checked as a worker renders it: "
    "formatting only (no calls, no loops but over `messages`), known variables only.",
)
def push_template(
    body: TemplateCreate, response: Response, session: SessionDep, key: SubmitKey
) -> TemplateOut:
    row, created = service.push(session, key.project_id, service.build_feedback(body))
    if not created:
        response.status_code = status.HTTP_200_OK
    return stored_out(row, created)


@router.get("", response_model=list[TemplateOut])
def list_templates(session: SessionDep, key: ReadKey) -> list[TemplateOut]:
    """The shipped templates, then every version of the project's own."""
    shipped = [built_in_out(t) for t in feedback_templates.BUILT_IN.values()]
    return shipped + [stored_out(r) for r in service.listing(session, key.project_id)]


@router.get("/{ref}", response_model=TemplateOut)
def get_template(ref: str, session: SessionDep, key: ReadKey) -> TemplateOut:
    if ref in feedback_templates.BUILT_IN:
        return built_in_out(feedback_templates.BUILT_IN[ref])
    return stored_out(service.find(session, key.project_id, ref, field="ref", malformed=NotFound))


@router.post("/{ref}/render", response_model=RenderOut)
def render_template(
    ref: str, body: RenderRequest, session: SessionDep, key: SubmitKey
) -> RenderOut:
    """The exact prompt a comparison would get (no few-shot examples), to check a template
    before labelling with it. Changes nothing; the submit scope, as for every POST."""
    template = service.resolve(session, key.project_id, ref)
    try:
        principle = ComparisonPrinciple(id="preview", text=body.principle)
    except ValidationError as exc:
        raise Invalid(exc.errors()[0]["msg"], field="body.principle") from exc
    constitution = Constitution(name="preview", comparison_principles=[principle])
    messages = prompts.feedback_conversation(
        constitution, principle, [m.model_dump() for m in body.conversation], body.response_a, body.response_b,
        chain_of_thought=body.chain_of_thought, few_shot=False, template=template,
    )  # fmt: skip
    cue = "" if body.chain_of_thought else prompts.answer_prefix(template)
    return RenderOut(messages=messages, answer_prefix=cue)
