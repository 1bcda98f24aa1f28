"""Training runs: queued by users, leased by trainers, reported over the API.

The trainer never touches the database: it claims a run here (a lease with an
owner and an expiry, like work items), heartbeats, streams metrics, and marks
the run completed or failed. Every write names the owner, so a trainer whose
lease was taken over cannot report into a run it no longer holds.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from charter.db.models import RunMetric, TrainingRun, utcnow
from charter.errors import Conflict, Invalid, NotFound
from services.gateway.datasets import service as datasets
from services.gateway.runs.schemas import DATASET_KINDS, MetricPoint, RunCreate

FINAL = ("completed", "failed", "cancelled")


def get(session: Session, project_id: str, run_id: str, *, field: str = "run_id") -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None or run.project_id != project_id:
        raise NotFound(f"training run {run_id!r} not found", field=field)
    return run


def create(session: Session, project_id: str, spec: RunCreate) -> TrainingRun:
    dataset, version = datasets.resolve(session, project_id, spec.dataset, field="dataset")
    if dataset.kind not in DATASET_KINDS[spec.type]:
        raise Invalid(
            f"a {spec.type} run trains on {' or '.join(DATASET_KINDS[spec.type])} data; "
            f"{dataset.name} is {dataset.kind}",
            field="dataset",
        )
    if spec.type == "ppo":
        if spec.reward_run is None:
            raise Invalid("a ppo run needs reward_run: a completed pm run", field="reward_run")
        reward = get(session, project_id, spec.reward_run, field="reward_run")
        if reward.type != "pm" or reward.status != "completed":
            raise Invalid("reward_run must be a completed pm run", field="reward_run")
    elif spec.reward_run or spec.reference_model:
        raise Invalid("reward_run and reference_model apply to ppo runs only", field="type")
    for field, model in (
        ("base_model", spec.base_model),
        ("reference_model", spec.reference_model),
    ):
        if model and model.startswith("run:"):
            source = get(session, project_id, model[4:], field=field)
            if source.status != "completed":
                raise Invalid(f"{model} has not completed", field=field)
    config = {
        "base_model": spec.base_model,
        "reward_run": spec.reward_run,
        "reference_model": spec.reference_model or spec.base_model,
        "dataset": f"{dataset.name}@{version.version}",
        **spec.config,
    }
    run = TrainingRun(
        project_id=project_id, type=spec.type, dataset_version_id=version.id, config=config
    )
    session.add(run)
    session.flush()
    return run


def claim(
    session: Session, project_id: str, owner: str, types: list[str] | None, lease_seconds: float
) -> TrainingRun | None:
    """The oldest queued run (or one whose trainer vanished), leased to ``owner``."""
    now = utcnow()
    query = (
        select(TrainingRun)
        .where(
            TrainingRun.project_id == project_id,
            or_(
                TrainingRun.status == "queued",
                and_(TrainingRun.status == "running", TrainingRun.lease_expires_at < now),
            ),
        )
        .order_by(TrainingRun.created_at)
        .limit(1)
    )
    if types:
        query = query.where(TrainingRun.type.in_(types))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    run = session.scalar(query)
    if run is None:
        return None
    run.status = "running"
    run.lease_owner = owner
    run.lease_expires_at = now + timedelta(seconds=lease_seconds)
    run.started_at = run.started_at or now
    run.error = None
    session.flush()
    return run


def held(session: Session, project_id: str, run_id: str, owner: str) -> TrainingRun:
    """The run, if ``owner`` still holds its lease; 409 otherwise (fencing)."""
    run = get(session, project_id, run_id)
    if run.status != "running" or run.lease_owner != owner:
        raise Conflict(
            f"run {run_id} is not leased to {owner!r} (status {run.status})", field="owner"
        )
    return run


def heartbeat(run: TrainingRun, lease_seconds: float) -> None:
    run.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds)


def add_metrics(session: Session, run: TrainingRun, points: list[MetricPoint]) -> None:
    session.add_all(RunMetric(run_id=run.id, step=p.step, metrics=p.metrics) for p in points)


def finish(
    run: TrainingRun, status: str, *, artifact_uri: str | None = None, error: str | None = None
) -> None:
    run.status = status
    run.finished_at = utcnow()
    run.lease_owner = run.lease_expires_at = None
    if artifact_uri is not None:
        run.artifact_uri = artifact_uri
    if error is not None:
        run.error = error


def resume(run: TrainingRun) -> None:
    """Back to the queue, keeping the last checkpoint so training continues from it."""
    if run.status not in ("failed", "cancelled"):
        raise Conflict(
            f"only a failed or cancelled run can be resumed (status {run.status})", field="run_id"
        )
    run.status = "queued"
    run.finished_at = None
    run.error = None


def cancel(run: TrainingRun) -> None:
    if run.status in FINAL:
        raise Conflict(f"run {run.id} already {run.status}", field="run_id")
    finish(run, "cancelled")


def last_metrics(session: Session, run_id: str, window: int = 50) -> dict[str, float]:
    """The latest value of each metric among the run's most recent reports."""
    rows = session.scalars(
        select(RunMetric.metrics)
        .where(RunMetric.run_id == run_id)
        .order_by(RunMetric.id.desc())
        .limit(window)
    ).all()
    latest: dict[str, float] = {}
    for metrics in reversed(rows):
        latest.update(metrics)
    return latest
