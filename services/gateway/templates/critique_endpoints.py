"""``/v1/critique-templates``: the shipped critique templates and a project's own."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import ValidationError

from charter.core import critique_templates, prompts
from charter.core.constitution import Constitution, CritiquePrinciple
from charter.errors import Invalid, NotFound
from services.gateway.deps import ReadKey, SessionDep, SubmitKey
from services.gateway.templates import service
from services.gateway.templates.endpoints import built_in_out, stored_out
from services.gateway.templates.schemas import (
    CritiqueRenderOut,
    CritiqueRenderRequest,
    CritiqueTemplateCreate,
    TemplateOut,
)
from services.gateway.unit_of_work import UnitOfWorkRoute

router = APIRouter(prefix="/v1/critique-templates", tags=["templates"], route_class=UnitOfWorkRoute)
KIND = service.CRITIQUE


@router.post(
    "",
    response_model=TemplateOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": TemplateOut, "description": "Unchanged: the latest version."}},
    description="A new version when the template differs from the latest of that name "
    "(201), else the latest itself (200, `created: false`). Checked as a worker renders it: "
    "formatting only, known variables only.",
)
def push_critique_template(
    body: CritiqueTemplateCreate, response: Response, session: SessionDep, key: SubmitKey
) -> TemplateOut:
    template = service.build_critique(body)
    row, created = service.push(session, key.project_id, template, KIND)
    if not created:
        response.status_code = status.HTTP_200_OK
    return stored_out(row, created)


@router.get("", response_model=list[TemplateOut])
def list_critique_templates(session: SessionDep, key: ReadKey) -> list[TemplateOut]:
    """The shipped templates, then every version of the project's own."""
    shipped = [built_in_out(t, KIND) for t in critique_templates.BUILT_IN.values()]
    return shipped + [stored_out(r) for r in service.listing(session, key.project_id, KIND)]


@router.get("/{ref}", response_model=TemplateOut)
def get_critique_template(ref: str, session: SessionDep, key: ReadKey) -> TemplateOut:
    if ref in critique_templates.BUILT_IN:
        return built_in_out(critique_templates.BUILT_IN[ref], KIND)
    row = service.find(session, key.project_id, ref, field="ref", malformed=NotFound, kind=KIND)
    return stored_out(row)


@router.post("/{ref}/render", response_model=CritiqueRenderOut)
def render_critique_template(
    ref: str, body: CritiqueRenderRequest, session: SessionDep, key: SubmitKey
) -> CritiqueRenderOut:
    """The exact conversations of one SL-CAI round (no few-shot examples), to check a
    template before using it. Changes nothing; the submit scope, as for every POST."""
    template = service.resolve(session, key.project_id, ref, KIND)
    try:
        principle = CritiquePrinciple(
            id="preview", critique=body.critique_request, revision=body.revision_request
        )
    except ValidationError as exc:
        raise Invalid(exc.errors()[0]["msg"], field="body.critique_request") from exc
    step = prompts.critique_step(
        Constitution(name="preview", critique_principles=[principle]),
        principle,
        [m.model_dump() for m in body.conversation],
        body.response,
        few_shot=False,
        template=template,
    )
    return CritiqueRenderOut(critique=step.critique(), revision=step.revision(body.critique))
