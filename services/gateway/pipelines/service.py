"""Pipelines: the whole recipe as one object, advanced stage by stage.

Submitting one checks everything that can be checked before any stage runs (the
batches, the base model, the constitution and templates of both labelling jobs, the mix
source, the judges, and that some worker serves training runs' models, which RL-CAI
and the Elo evaluation need), pins the constitution and the seed into the stored spec,
and stores the pipeline in the request's transaction. :func:`advance` (run by the
gateway's :class:`~services.gateway.pipelines.advancer.Advancer`) does the rest.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from charter.core import pipeline_plans as plans
from charter.core.jobs import RUN_MODELS, JobType
from charter.core.pipeline_plans import PipelineState, StageStatus
from charter.db.models import Pipeline, PipelineStage, utcnow
from charter.errors import CharterError, Conflict, Invalid, NotFound
from charter.settings import Settings
from services.gateway.batches import service as batches
from services.gateway.datasets import service as datasets
from services.gateway.jobs import service as jobs
from services.gateway.jobs.schemas import JobCreate
from services.gateway.pagination import project_page
from services.gateway.pipelines import plan, stages
from services.gateway.pipelines.schemas import PipelineCreate
from services.gateway.policy_evals.service import pin_judge


def _field_of(exc: CharterError, prefix: str) -> CharterError:
    field = (exc.field or "").removeprefix("body.")
    exc.field = f"{prefix}.{field}" if field else prefix
    return exc


def submit(session: Session, project_id: str, body: PipelineCreate, settings: Settings) -> Pipeline:
    for name in ("prompts", "rl_prompts", "eval_prompts"):
        if (batch_id := getattr(body, name)) is not None:
            batch = batches.get(session, project_id, batch_id, field=f"body.{name}")
            if batch.row_count == 0:
                raise Invalid("the batch has no prompts", field=f"body.{name}")
    if not jobs.serves_run_models(session, settings):
        raise Invalid(
            f"no worker serves training runs' models ({RUN_MODELS} in CHARTER_WORKER_MODELS): "
            "RL-CAI labels with the SFT model and the Elo evaluation generates with each "
            "trained policy",
            field="body.rl_cai",
        )
    spec = body.model_copy(deep=True)
    spec.seed = body.seed if body.seed is not None else secrets.randbelow(2**62)
    for stage, job_type in (("sl_cai", JobType.SL_CAI), ("rl_cai", JobType.RL_CAI)):
        job = JobCreate(
            type=job_type,
            batch_id=body.prompts,
            constitution=spec.constitution,
            model=body.base_model,  # rl_cai's is the SFT model: a run of this pipeline
            params=getattr(body, stage).params,
            chunk_size=body.chunk_size,
        )
        try:
            pinned = jobs.pin(session, project_id, job, settings)
        except CharterError as exc:
            if exc.field == "constitution":
                exc.field = "body.constitution"
                raise
            raise _field_of(exc, f"body.{stage}") from exc
        spec.constitution = pinned.ref  # every stage reads the version pinned now
    if spec.sft_data.mix is not None:
        try:
            spec.sft_data.mix.source = datasets.check_mix(
                session, project_id, "sft", spec.sft_data.mix
            )
        except CharterError as exc:
            raise _field_of(exc, "body.sft_data") from exc
    pinned_judges = []
    for index, judge in enumerate(plan.judges(spec)):
        try:
            pinned_judges.append(pin_judge(session, project_id, judge, settings))
        except CharterError as exc:
            raise _field_of(exc, f"body.elo.judges.{index}") from exc
    spec.elo.judges = pinned_judges
    pipeline = Pipeline(
        project_id=project_id,
        name=body.name,
        spec=spec.model_dump(mode="json"),
        state=PipelineState.ACTIVE,
    )
    session.add(pipeline)
    session.flush()
    return pipeline


def get(session: Session, project_id: str, pipeline_id: str) -> Pipeline:
    pipeline = session.get(Pipeline, pipeline_id)
    if pipeline is None or pipeline.project_id != project_id:
        raise NotFound(f"pipeline {pipeline_id!r} not found", field="pipeline_id")
    return pipeline


def page(
    session: Session, project_id: str, cursor: str | None, limit: int
) -> tuple[list[Pipeline], str | None]:
    return project_page(session, Pipeline, project_id, cursor, limit)


def spec_of(pipeline: Pipeline) -> PipelineCreate:
    return PipelineCreate.model_validate(pipeline.spec)


def graph(pipeline: Pipeline) -> tuple[plans.Stage, ...]:
    return plans.stages(spec_of(pipeline).rl())


def current(session: Session, pipeline_id: str) -> dict[str, PipelineStage]:
    """Each stage's latest attempt."""
    rows = session.scalars(
        select(PipelineStage)
        .where(PipelineStage.pipeline_id == pipeline_id)
        .order_by(PipelineStage.name, PipelineStage.attempt)
    )
    return {row.name: row for row in rows}  # the later attempt overwrites the earlier


def attempts(session: Session, pipeline_id: str) -> list[PipelineStage]:
    """Every attempt of every stage, oldest first."""
    return list(
        session.scalars(
            select(PipelineStage)
            .where(PipelineStage.pipeline_id == pipeline_id)
            .order_by(PipelineStage.created_at, PipelineStage.name, PipelineStage.attempt)
        )
    )


def _locked(session: Session, project_id: str, pipeline_id: str) -> Pipeline:
    """The pipeline, row-locked: a cancel, a resume or a rerun and an advance happen one
    after the other, never interleaved."""
    get(session, project_id, pipeline_id)
    return session.scalars(
        select(Pipeline)
        .where(Pipeline.id == pipeline_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def _stop(session: Session, pipeline: Pipeline, names: list[str], status: StageStatus) -> None:
    """Cancel the work of ``names``' current attempts still running, and mark every one of
    them ``status`` (a completed attempt stays completed unless it is superseded)."""
    rows = current(session, pipeline.id)
    now = utcnow()
    for name in names:
        row = rows.get(name)
        if row is None:
            continue
        if row.status == StageStatus.SUBMITTED:
            stages.cancel(session, pipeline.project_id, row)
        if row.status == StageStatus.SUBMITTED or status == StageStatus.SUPERSEDED:
            row.status, row.finished_at = status, row.finished_at or now


def cancel(session: Session, project_id: str, pipeline_id: str) -> Pipeline:
    pipeline = _locked(session, project_id, pipeline_id)
    if pipeline.state in (PipelineState.COMPLETED, PipelineState.CANCELLED):
        raise Conflict(f"pipeline {pipeline_id} is already {pipeline.state}", field="pipeline_id")
    _stop(session, pipeline, [s.name for s in graph(pipeline)], StageStatus.CANCELLED)
    pipeline.state, pipeline.advanced_at = PipelineState.CANCELLED, utcnow()
    return pipeline


def resume(session: Session, project_id: str, pipeline_id: str) -> Pipeline:
    """Active again: a failed or cancelled training run continues from its checkpoint
    (same attempt); any other failed or cancelled stage is tried again (a new attempt)."""
    pipeline = _locked(session, project_id, pipeline_id)
    if pipeline.state not in (PipelineState.FAILED, PipelineState.CANCELLED):
        raise Conflict(
            f"only a failed or cancelled pipeline resumes (this one is {pipeline.state})",
            field="pipeline_id",
        )
    for row in current(session, pipeline.id).values():
        if row.status in (StageStatus.FAILED, StageStatus.CANCELLED) and stages.resume_run(
            session, project_id, row
        ):
            row.status, row.error, row.finished_at = StageStatus.SUBMITTED, None, None
    pipeline.state, pipeline.error = PipelineState.ACTIVE, None
    return pipeline


def rerun(session: Session, project_id: str, pipeline_id: str, stage: str) -> Pipeline:
    """Supersede ``stage`` and everything downstream of it (their running work is
    cancelled); the advancer submits them again once what they need is completed."""
    pipeline = _locked(session, project_id, pipeline_id)
    try:
        names = plans.downstream(graph(pipeline), stage)
    except ValueError as exc:
        raise Invalid(str(exc), field="body.stage") from None
    _stop(session, pipeline, names, StageStatus.SUPERSEDED)
    pipeline.state, pipeline.error = PipelineState.ACTIVE, None
    return pipeline


def advance(session: Session, pipeline: Pipeline, settings: Settings, after: stages.After) -> None:
    """One step of an active pipeline, in the caller's transaction (``pipeline``
    row-locked): poll the stages in flight, then submit every stage whose needs have
    completed. A stage that fails fails the pipeline, with the stage and the reason."""
    spec = spec_of(pipeline)
    graph_ = plans.stages(spec.rl())
    rows = current(session, pipeline.id)
    now = utcnow()
    failed = []
    for row in rows.values():
        if row.status != StageStatus.SUBMITTED:
            continue
        state, output, error = stages.poll(session, row)
        if state == StageStatus.SUBMITTED:
            continue
        row.status, row.output, row.error, row.finished_at = state, output, error, now
        pipeline.advanced_at = now
        if state == StageStatus.FAILED:
            failed.append(row)
    if failed:
        pipeline.state = PipelineState.FAILED
        pipeline.error = "; ".join(f"stage {r.name} failed: {r.error}" for r in failed)
        return
    status = {name: StageStatus(row.status) for name, row in rows.items()}
    if plans.finished(graph_, status):
        pipeline.state, pipeline.advanced_at = PipelineState.COMPLETED, now
        return
    outputs = {
        name: row.output
        for name, row in rows.items()
        if row.status == StageStatus.COMPLETED and row.output
    }
    for name in plans.runnable(graph_, status):
        _submit(session, pipeline, spec, graph_, name, rows, outputs, settings, after)
        pipeline.advanced_at = now
        if pipeline.state == PipelineState.FAILED:
            return


def _submit(
    session: Session,
    pipeline: Pipeline,
    spec: PipelineCreate,
    graph_: tuple[plans.Stage, ...],
    name: str,
    rows: Mapping[str, PipelineStage],
    outputs: Mapping[str, str],
    settings: Settings,
    after: stages.After,
) -> None:
    stage = next(s for s in graph_ if s.name == name)
    previous = rows.get(name)
    body = plan.body(spec, pipeline.id, name, outputs)
    row = PipelineStage(
        pipeline_id=pipeline.id,
        name=name,
        attempt=previous.attempt + 1 if previous else 1,
        kind=stage.kind,
        status=StageStatus.SUBMITTED,
        inputs={"body": body, "upstream": {n: rows[n].attempt for n in stage.needs}},
    )
    effects = stages.After()
    try:
        with session.begin_nested():  # a stage that cannot be made leaves nothing half-made
            stages.submit(session, pipeline.project_id, row, body, settings, effects)
            session.add(row)
            session.flush()
    except CharterError as exc:
        row.status, row.error, row.finished_at = StageStatus.FAILED, str(exc), utcnow()
        row.job_id = row.dataset_version_id = row.run_id = row.policy_eval_id = None
        session.add(row)
        pipeline.state = PipelineState.FAILED
        pipeline.error = f"stage {name} cannot be submitted: {exc}"
        return
    after.jobs += effects.jobs
    after.wake_freezer = after.wake_freezer or effects.wake_freezer
