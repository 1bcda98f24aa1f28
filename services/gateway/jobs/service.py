"""Submitting and cancelling jobs. A job and all its work items commit together."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, assert_never

from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.orm import Session

from charter import webhook_events
from charter.core.constitution import Constitution
from charter.core.jobs import (
    ACTIVE_STATES,
    BUILTIN_SMOLLM2,
    FINAL_JOB_STATUSES,
    RUN_MODELS,
    ItemState,
    JobParams,
    JobStatus,
    JobType,
    job_input,
    job_status,
    principle_kind,
)
from charter.db.models import ConstitutionVersion, Job, Label, Prompt, Worker, WorkItem, utcnow
from charter.errors import Conflict, Invalid, NotFound
from charter.settings import Settings
from services.gateway.batches import service as batches
from services.gateway.constitutions import service as constitutions
from services.gateway.jobs.schemas import JobCreate
from services.gateway.pagination import id_page, project_page
from services.gateway.runs import service as runs
from services.gateway.templates import service as templates


def _check_batch(session: Session, batch_id: str, job_type: JobType) -> None:
    match job_input(job_type):
        case "prompt":
            return
        case "response":
            what, condition = "response", Prompt.response.is_(None)
        case "pair":
            what, condition = "response_a and response_b", Prompt.response_a.is_(None)
        case other:
            assert_never(other)
    first = session.scalar(
        select(func.min(Prompt.position)).where(Prompt.batch_id == batch_id, condition)
    )
    if first is not None:
        raise Invalid(
            f"job type '{job_type}' needs {what} on every row; row {first} has none",
            field="batch_id",
        )


def _check_constitution(
    content: dict[str, object], job_type: JobType, ref: str, params: JobParams
) -> None:
    constitution = Constitution.model_validate(content)
    kind = principle_kind(job_type)
    principle = params.principle
    if params.system_prompt != "default" and job_type != JobType.GENERATE:
        raise Invalid(
            f"job type '{job_type}' writes with Charter's own prompts; only generate jobs "
            "take a system_prompt",
            field="params.system_prompt",
        )
    if principle is not None:
        known = [p.id for p in constitution.comparison_principles]
        if kind != "comparison":
            raise Invalid(
                f"job type '{job_type}' draws no comparison principle", field="params.principle"
            )
        if principle not in known:
            raise Invalid(
                f"{ref} has no comparison principle {principle!r} (it has: {', '.join(known)})",
                field="params.principle",
            )
    match kind:
        case "critique":
            missing = not constitution.critique_principles
        case "comparison":
            missing = not constitution.comparison_principles
        case "none":
            missing = False
        case _:
            assert_never(kind)
    if missing:
        raise Invalid(f"{ref} has no {kind} principles", field="constitution")


def _configured_models(settings: Settings) -> set[str]:
    return {BUILTIN_SMOLLM2, *settings.models, *settings.worker_models}


def known_models(session: Session, settings: Settings) -> set[str]:
    """Models some configuration knows: the built-in one, the gateway's model map and
    worker list, and whatever a registered worker announced it serves."""
    announced = session.scalars(select(Worker.models)).all()
    return _configured_models(settings) | {m for models in announced for m in models}


def serves_run_models(session: Session, settings: Settings) -> bool:
    """Whether some worker loads any completed run's model on demand: one registered
    worker announced ``run:*``, or the gateway's own worker list has it (as known models
    count the configured ones)."""
    if RUN_MODELS in settings.worker_models:
        return True
    return any(RUN_MODELS in models for models in session.scalars(select(Worker.models)))


SCORING_RUNS = {"pm": "preference model", "classifier": "classifier"}
"""Run types whose model scores text rather than writing it."""


def _check_model(session: Session, settings: Settings, project_id: str, model: str) -> None:
    run = runs.model_run(session, project_id, model, field="model")
    if run is not None and run.type in SCORING_RUNS:
        raise Invalid(
            f"{model} is a {SCORING_RUNS[run.type]}: it scores text, it does not write",
            field="model",
        )
    if run is not None and not run.artifact_uri:
        raise Invalid(f"{model} reported no model artifact", field="model")
    if model in _configured_models(settings):
        return  # no need to read the workers' announcements
    if run is not None and serves_run_models(session, settings):
        return
    known = known_models(session, settings)
    if model not in known:
        hint = f"; none serves {RUN_MODELS}" if run is not None else ""
        raise Invalid(
            f"unknown model {model!r}: no configuration or worker serves it{hint} "
            f"(known: {', '.join(sorted(known))})",
            field="model",
        )


@dataclass(frozen=True)
class Pinned:
    """What a job spec resolves to: the exact constitution version and its ref, and the
    params as stored (templates pinned, the chunk size filled in)."""

    version: ConstitutionVersion
    ref: str
    params: dict[str, Any]


def _check_choices(
    session: Session, project_id: str, spec: JobCreate, settings: Settings, evaluation: bool
) -> None:
    if not spec.params.neutralise and not evaluation:
        raise Invalid(
            "only a judge evaluation turns neutralisation off (POST /v1/evals with "
            "injection.defences_off)",
            field="params.neutralise",
        )
    _check_model(session, settings, project_id, spec.model)


def _pin_texts(session: Session, project_id: str, spec: JobCreate, settings: Settings) -> Pinned:
    version = constitutions.resolve(session, project_id, spec.constitution)
    ref = f"{constitutions.name_of(session, version)}@{version.version}"
    _check_constitution(version.content, spec.type, ref, spec.params)
    chunk_size = spec.chunk_size or settings.chunk_size
    params = spec.params.model_dump(mode="json") | {"chunk_size": chunk_size}
    match principle_kind(spec.type):  # the template is pinned: labels can be reproduced
        case "comparison":
            params["feedback_template"] = templates.pin(
                session,
                project_id,
                spec.params.feedback_template,
                field="params.feedback_template",
            )
        case "critique":
            params["critique_template"] = templates.pin(
                session,
                project_id,
                spec.params.critique_template,
                field="params.critique_template",
                kind=templates.CRITIQUE,
            )
        case "none":
            pass  # writes with the system prompt alone
        case other:
            assert_never(other)
    return Pinned(version, ref, params)


def pin(
    session: Session,
    project_id: str,
    spec: JobCreate,
    settings: Settings,
    *,
    evaluation: bool = False,
) -> Pinned:
    """Every check of a job spec but its batch's; ``evaluation``: the job belongs to a
    judge evaluation, the only kind that may turn neutralisation off."""
    _check_choices(session, project_id, spec, settings, evaluation)
    return _pin_texts(session, project_id, spec, settings)


def submit(
    session: Session,
    project_id: str,
    spec: JobCreate,
    settings: Settings,
    *,
    evaluation: bool = False,
) -> Job:
    """Check and store a job with all its work items (see :func:`pin`). The batch is
    looked up before the constitution: another project's batch is a 404 on ``batch_id``
    whatever else the spec names."""
    _check_choices(session, project_id, spec, settings, evaluation)
    batch = batches.get(session, project_id, spec.batch_id)
    pinned = _pin_texts(session, project_id, spec, settings)
    version, ref, params = pinned.version, pinned.ref, pinned.params
    _check_batch(session, batch.id, spec.type)
    chunk_size = params["chunk_size"]
    job = Job(
        project_id=project_id,
        type=spec.type.value,
        batch_id=batch.id,
        constitution_version_id=version.id,
        constitution_ref=ref,
        model=spec.model,
        params=params,
        seed=spec.seed if spec.seed is not None else secrets.randbelow(2**62),
        item_count=batch.row_count,
        chunk_count=-(-batch.row_count // chunk_size),
    )
    session.add(job)
    session.flush()
    now = utcnow()
    rows = select(
        literal(job.id),
        Prompt.id,
        Prompt.position // chunk_size,
        literal(ItemState.QUEUED.value),
        literal(0),
        literal(now),
    ).where(Prompt.batch_id == batch.id)
    session.execute(
        insert(WorkItem).from_select(
            ["job_id", "prompt_id", "chunk", "status", "attempt", "updated_at"], rows
        )
    )
    return job


def get(session: Session, project_id: str, job_id: str, *, field: str = "job_id") -> Job:
    job = session.get(Job, job_id)
    if job is None or job.project_id != project_id:
        raise NotFound(f"job {job_id!r} not found", field=field)
    return job


def completions(session: Session, job_id: str) -> dict[int, tuple[int, str | None]]:
    """Position in its batch -> (label id, completion) of each of a job's labels: how a
    job whose prompts were planned (wording, classifier data) is read back."""
    found = session.execute(
        select(Prompt.position, Label.id, Label.completion)
        .join(Label, Label.prompt_id == Prompt.id)
        .where(Label.job_id == job_id)
    )
    return {position: (label_id, text) for position, label_id, text in found}


def counts(session: Session, job_ids: list[str]) -> dict[str, dict[str, int]]:
    result: dict[str, dict[str, int]] = {job_id: {} for job_id in job_ids}
    if job_ids:
        for job_id, state, n in session.execute(
            select(WorkItem.job_id, WorkItem.status, func.count())
            .where(WorkItem.job_id.in_(job_ids))
            .group_by(WorkItem.job_id, WorkItem.status)
        ):
            result[job_id][state] = n
    return result


def cancel(session: Session, project_id: str, job_id: str) -> Job:
    job = get(session, project_id, job_id)
    if job.status == JobStatus.CANCELLED:
        return job
    if job_status(counts(session, [job.id])[job.id], cancelled=False) == JobStatus.COMPLETED:
        raise Conflict(f"job {job_id!r} already completed", field="job_id")
    now = utcnow()
    # Conditional, so a worker's transaction that completes the job meanwhile (its own
    # update is conditional too) wins or loses as a whole: never both, never two events.
    moved = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.not_in(FINAL_JOB_STATUSES))
        .values(status=JobStatus.CANCELLED, finished_at=now, updated_at=now)
        .execution_options(synchronize_session="fetch")
    ).rowcount
    if not moved:
        session.refresh(job)
        if job.status == JobStatus.CANCELLED:
            return job
        raise Conflict(f"job {job_id!r} already completed", field="job_id")
    # Running items are cancelled too: their worker's fenced write then matches no row.
    session.execute(
        update(WorkItem)
        .where(WorkItem.job_id == job.id, WorkItem.status.in_(ACTIVE_STATES))
        .values(status=ItemState.CANCELLED, lease_owner=None, lease_expires_at=None, updated_at=now)
    )
    session.flush()
    webhook_events.job_finished(session, job.id)
    return job


def page(
    session: Session, project_id: str, cursor: str | None, limit: int
) -> tuple[list[Job], str | None]:
    """The project's jobs, newest first."""
    return project_page(session, Job, project_id, cursor, limit)


def results_page(
    session: Session, job_id: str, cursor: str | None, limit: int
) -> tuple[list[Label], str | None]:
    """A job's labels in the order they were written."""
    query = select(Label).where(Label.job_id == job_id)
    return id_page(session, query, Label.id, cursor, limit)


def items_page(
    session: Session, job_id: str, state: ItemState | None, cursor: str | None, limit: int
) -> tuple[list[WorkItem], str | None]:
    """A job's work items (those in ``state``, if given) in prompt order."""
    query = select(WorkItem).where(WorkItem.job_id == job_id)
    if state is not None:
        query = query.where(WorkItem.status == state)
    return id_page(session, query, WorkItem.id, cursor, limit)
