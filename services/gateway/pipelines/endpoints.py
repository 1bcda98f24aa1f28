"""``/v1/pipelines``: the whole recipe, from red-team prompts to rated policies."""

from __future__ import annotations

from fastapi import APIRouter, status

from charter.core.pipeline_plans import Stage
from charter.db.models import Pipeline, PipelineStage
from services.gateway.deps import (
    Cursor,
    Limit,
    ReadKey,
    SessionDep,
    SettingsDep,
    TrainKey,
    check_scope,
)
from services.gateway.pagination import Page
from services.gateway.pipelines import service
from services.gateway.pipelines.schemas import PipelineCreate, PipelineOut, RerunRequest, StageOut
from services.gateway.unit_of_work import UnitOfWorkRoute

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"], route_class=UnitOfWorkRoute)
_BOTH = (
    "Needs an API key with both the train and the submit scope: a pipeline submits "
    "labelling jobs as well as training runs."
)


_ATTEMPT = (
    "status", "attempt", "output", "error", "inputs", "job_id", "dataset_version_id",
    "run_id", "policy_eval_id", "created_at", "finished_at",
)  # fmt: skip


def _stage(stage: Stage, row: PipelineStage | None) -> StageOut:
    """A stage with one attempt of it (None: pending, attempt 0)."""
    attempt = (
        dict.fromkeys(_ATTEMPT) | {"status": "pending", "attempt": 0}
        if row is None
        else {name: getattr(row, name) for name in _ATTEMPT}
    )
    return StageOut.model_validate(
        attempt | {"name": stage.name, "kind": stage.kind, "needs": list(stage.needs)}
    )


def out(session: SessionDep, pipeline: Pipeline) -> PipelineOut:
    rows = service.current(session, pipeline.id)
    stages = [_stage(stage, rows.get(stage.name)) for stage in service.graph(pipeline)]
    return PipelineOut(
        id=pipeline.id,
        name=pipeline.name,
        state=pipeline.state,  # type: ignore[arg-type]
        error=pipeline.error,
        spec=pipeline.spec,
        stages=stages,
        created_at=pipeline.created_at,
        advanced_at=pipeline.advanced_at,
    )


@router.post(
    "",
    response_model=PipelineOut,
    status_code=status.HTTP_202_ACCEPTED,
    description="Run the whole recipe: SL-CAI on the red-team prompts, the SFT dataset "
    "(mixed with helpful data if asked) and run, RL-CAI with the SFT model, the preference "
    "dataset, the PM, the policy runs (ppo, dpo, rloo, grpo) from the SFT model, and an Elo "
    "evaluation of the base, SFT and trained policies. Errors name their field: "
    f"`body.<stage>.<field>`. {_BOTH}",
)
def submit_pipeline(
    body: PipelineCreate, session: SessionDep, settings: SettingsDep, key: TrainKey
) -> PipelineOut:
    check_scope(key, "submit")
    return out(session, service.submit(session, key.project_id, body, settings))


@router.get("", response_model=Page[PipelineOut])
def list_pipelines(
    session: SessionDep, key: ReadKey, cursor: Cursor = None, limit: Limit = 50
) -> Page[PipelineOut]:
    found, next_cursor = service.page(session, key.project_id, cursor, limit)
    return Page(items=[out(session, p) for p in found], next_cursor=next_cursor)


@router.get("/{pipeline_id}", response_model=PipelineOut)
def get_pipeline(pipeline_id: str, session: SessionDep, key: ReadKey) -> PipelineOut:
    return out(session, service.get(session, key.project_id, pipeline_id))


@router.get("/{pipeline_id}/stages", response_model=list[StageOut])
def pipeline_attempts(pipeline_id: str, session: SessionDep, key: ReadKey) -> list[StageOut]:
    """Every attempt of every stage, oldest first: what each was submitted with and made."""
    pipeline = service.get(session, key.project_id, pipeline_id)
    graph = {s.name: s for s in service.graph(pipeline)}
    return [_stage(graph[row.name], row) for row in service.attempts(session, pipeline.id)]


@router.post("/{pipeline_id}/cancel", response_model=PipelineOut, description=_BOTH)
def cancel_pipeline(pipeline_id: str, session: SessionDep, key: TrainKey) -> PipelineOut:
    """Cancel the stages in flight; finished stages' objects stay."""
    check_scope(key, "submit")
    return out(session, service.cancel(session, key.project_id, pipeline_id))


@router.post("/{pipeline_id}/resume", response_model=PipelineOut, description=_BOTH)
def resume_pipeline(pipeline_id: str, session: SessionDep, key: TrainKey) -> PipelineOut:
    """A failed or cancelled pipeline goes on: a failed training run continues from its
    last checkpoint, any other failed stage is tried again."""
    check_scope(key, "submit")
    return out(session, service.resume(session, key.project_id, pipeline_id))


@router.post("/{pipeline_id}/rerun", response_model=PipelineOut, description=_BOTH)
def rerun_pipeline(
    pipeline_id: str, body: RerunRequest, session: SessionDep, key: TrainKey
) -> PipelineOut:
    """Run a stage and everything downstream of it again (from the others' outputs)."""
    check_scope(key, "submit")
    return out(session, service.rerun(session, key.project_id, pipeline_id, body.stage))
