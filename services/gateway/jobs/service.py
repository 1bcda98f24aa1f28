"""Submitting and cancelling jobs. A job and all its work items commit together."""

from __future__ import annotations

import secrets

from sqlalchemy import func, insert, literal, select, update
from sqlalchemy.orm import Session

from charter.core.constitution import Constitution
from charter.core.jobs import (
    NEEDS_CRITIQUE_PRINCIPLES,
    NEEDS_PAIR,
    NEEDS_RESPONSE,
    JobType,
    job_status,
)
from charter.db.models import Job, Label, Prompt, Worker, WorkItem, utcnow
from charter.errors import Conflict, Invalid, NotFound
from charter.model_store import BUILTIN_SMOLLM2
from charter.settings import Settings
from services.gateway.batches import service as batches
from services.gateway.constitutions import service as constitutions
from services.gateway.jobs.schemas import JobCreate


def _check_batch(session: Session, batch_id: str, job_type: JobType) -> None:
    missing = None
    if job_type in NEEDS_RESPONSE:
        missing = ("response", Prompt.response.is_(None))
    elif job_type in NEEDS_PAIR:
        missing = ("response_a and response_b", Prompt.response_a.is_(None))
    if missing is None:
        return
    what, condition = missing
    first = session.scalar(
        select(func.min(Prompt.position)).where(Prompt.batch_id == batch_id, condition)
    )
    if first is not None:
        raise Invalid(
            f"job type '{job_type}' needs {what} on every row; row {first} has none",
            field="batch_id",
        )


def _check_constitution(content: dict[str, object], job_type: JobType, ref: str) -> None:
    constitution = Constitution.model_validate(content)
    if job_type in NEEDS_CRITIQUE_PRINCIPLES and not constitution.critique_principles:
        raise Invalid(f"{ref} has no critique principles", field="constitution")
    if job_type not in NEEDS_CRITIQUE_PRINCIPLES and not constitution.comparison_principles:
        raise Invalid(f"{ref} has no comparison principles", field="constitution")


def known_models(session: Session, settings: Settings) -> set[str]:
    """Models some configuration knows: the built-in one, the gateway's model map and
    worker list, and whatever a registered worker announced it serves."""
    announced = session.scalars(select(Worker.models)).all()
    return {
        BUILTIN_SMOLLM2,
        *settings.models,
        *settings.worker_models,
        *(m for models in announced for m in models),
    }


def _check_model(session: Session, settings: Settings, model: str) -> None:
    known = known_models(session, settings)
    if model not in known:
        raise Invalid(
            f"unknown model {model!r}: no configuration or worker serves it "
            f"(known: {', '.join(sorted(known))})",
            field="model",
        )


def submit(session: Session, project_id: str, spec: JobCreate, settings: Settings) -> Job:
    _check_model(session, settings, spec.model)
    batch = batches.get(session, project_id, spec.batch_id)
    version = constitutions.resolve(session, project_id, spec.constitution)
    ref = f"{constitutions.name_of(session, version)}@{version.version}"
    _check_constitution(version.content, spec.type, ref)
    _check_batch(session, batch.id, spec.type)
    chunk_size = spec.chunk_size or settings.chunk_size
    job = Job(
        project_id=project_id,
        type=spec.type.value,
        batch_id=batch.id,
        constitution_version_id=version.id,
        constitution_ref=ref,
        model=spec.model,
        params=spec.params.model_dump(mode="json") | {"chunk_size": chunk_size},
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
        literal("queued"),
        literal(0),
        literal(now),
    ).where(Prompt.batch_id == batch.id)
    session.execute(
        insert(WorkItem).from_select(
            ["job_id", "prompt_id", "chunk", "status", "attempt", "updated_at"], rows
        )
    )
    return job


def get(session: Session, project_id: str, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.project_id != project_id:
        raise NotFound(f"job {job_id!r} not found", field="job_id")
    return job


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
    if job.status == "cancelled":
        return job
    if job_status(counts(session, [job.id])[job.id], cancelled=False) == "completed":
        raise Conflict(f"job {job_id!r} already completed", field="job_id")
    now = utcnow()
    job.status = "cancelled"
    job.finished_at = now
    # Running items are cancelled too: their worker's fenced write then matches no row.
    session.execute(
        update(WorkItem)
        .where(WorkItem.job_id == job.id, WorkItem.status.in_(("queued", "running")))
        .values(status="cancelled", lease_owner=None, lease_expires_at=None, updated_at=now)
    )
    session.flush()
    return job


def items_done_by_worker(
    session: Session, project_id: str, worker_ids: list[str]
) -> dict[str, int]:
    """This project's labels per worker (a fleet-wide count would show others' work)."""
    if not worker_ids:
        return {}
    return dict(
        session.execute(  # type: ignore[arg-type]
            select(Label.worker_id, func.count())
            .where(Label.project_id == project_id, Label.worker_id.in_(worker_ids))
            .group_by(Label.worker_id)
        ).all()
    )
