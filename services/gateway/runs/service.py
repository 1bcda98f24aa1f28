"""Training runs: queued by users, leased by trainers, reported over the API.

The trainer never touches the database: it claims a run here (a lease with an
expiry, like work items), heartbeats, streams metrics, and marks the run
completed or failed. The claim answers a random lease token, shown only then and
stored only as its sha256; every lease-holder write presents it (:func:`held`
is the one fence), so neither a trainer whose lease was taken over nor another
train key that read the run's ``lease_owner`` can report into it. A new claim
issues a new token; finishing or cancelling the run clears it.

What a run trains on is fixed at creation: the validated fields go into its
config and ``config`` may not override them (:data:`PROVENANCE`). The config is
validated against the run type's class (:mod:`charter.core.run_configs`) and
stored normalised with its hash; the trainer reports the hash it trained with,
which must be the same. What it reports (artifact, checkpoint) must lie in its
folder of the artifact store.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from pathlib import Path

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from charter import webhook_events
from charter.core.artifact_paths import OutsideStore, confine
from charter.core.jobs import FINAL_RUN_STATUSES, RunStatus, run_of_model
from charter.db.models import Dataset, DatasetVersion, RunMetric, TrainingRun, utcnow
from charter.errors import Conflict, Invalid, NotFound
from services.gateway.datasets import service as datasets
from services.gateway.pagination import id_page, project_page
from services.gateway.runs.schemas import (
    DATASET_KINDS,
    MetricPoint,
    PPORunCreate,
    RewardedRunSpec,
    RunSpec,
)


def get(session: Session, project_id: str, run_id: str, *, field: str = "run_id") -> TrainingRun:
    run = session.get(TrainingRun, run_id)
    if run is None or run.project_id != project_id:
        raise NotFound(f"training run {run_id!r} not found", field=field)
    return run


def model_run(session: Session, project_id: str, model: str, *, field: str) -> TrainingRun | None:
    """The completed run of the project that a ``run:<id>`` model names; None for a
    named model."""
    run_id = run_of_model(model)
    if run_id is None:
        return None
    run = get(session, project_id, run_id, field=field)
    if run.status != RunStatus.COMPLETED:
        raise Invalid(f"{model} is {run.status}: it has not completed", field=field)
    return run


def dataset_refs(session: Session, runs: list[TrainingRun]) -> dict[str, str]:
    """Run id -> ``name@version`` of the dataset version it was created on (one query).

    Read from ``dataset_version_id``, never from the run's config."""
    ids = {r.dataset_version_id for r in runs if r.dataset_version_id}
    if not ids:
        return {}
    rows = session.execute(
        select(DatasetVersion.id, Dataset.name, DatasetVersion.version)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(DatasetVersion.id.in_(ids))
    )
    refs = {version_id: f"{name}@{number}" for version_id, name, number in rows}
    return {r.id: refs[r.dataset_version_id] for r in runs if r.dataset_version_id in refs}


def page(
    session: Session, project_id: str, cursor: str | None, limit: int
) -> tuple[list[TrainingRun], str | None]:
    """The project's runs, newest first."""
    return project_page(session, TrainingRun, project_id, cursor, limit)


def metrics_page(
    session: Session, run_id: str, cursor: str | None, limit: int
) -> tuple[list[RunMetric], str | None]:
    """A run's metric points in the order they were reported."""
    query = select(RunMetric).where(RunMetric.run_id == run_id)
    return id_page(session, query, RunMetric.id, cursor, limit)


def create(session: Session, project_id: str, spec: RunSpec) -> TrainingRun:
    """Queue a run; its body was validated (the config included) by :class:`RunCreate`."""
    dataset, version = datasets.resolve(session, project_id, spec.dataset, field="dataset")
    datasets.require_ready(dataset, version, field="dataset")
    if dataset.kind not in DATASET_KINDS[spec.type]:
        raise Invalid(
            f"a {spec.type} run trains on {' or '.join(DATASET_KINDS[spec.type])} data; "
            f"{dataset.name} is {dataset.kind}",
            field="dataset",
        )
    reward_run: str | None = None
    reference_model: str | None = None
    if isinstance(spec, RewardedRunSpec):
        reward_run = spec.reward_run
        if isinstance(spec, PPORunCreate):
            reference_model = spec.reference_model
        if reward_run is None:
            raise Invalid(
                f"a {spec.type} run needs reward_run: a completed pm run", field="reward_run"
            )
        reward = get(session, project_id, reward_run, field="reward_run")
        if reward.type != "pm" or reward.status != RunStatus.COMPLETED:
            raise Invalid("reward_run must be a completed pm run", field="reward_run")
    for field, model in (("base_model", spec.base_model), ("reference_model", reference_model)):
        if model:
            found = model_run(session, project_id, model, field=field)
            if found is not None and found.type == "classifier" and spec.type != "classifier":
                raise Invalid(
                    f"{model} is a classifier: it scores text; a {spec.type} run trains a "
                    "model that writes",
                    field=field,
                )
    config = {
        "base_model": spec.base_model,
        "reward_run": reward_run,
        "reference_model": reference_model or spec.base_model,
        "dataset": f"{dataset.name}@{version.version}",
        **spec.config.as_dict(),  # normalised: every field, defaults included
    }
    run = TrainingRun(
        project_id=project_id,
        type=spec.type,
        dataset_version_id=version.id,
        config=config,
        config_hash=spec.config.config_hash(),
    )
    session.add(run)
    session.flush()
    return run


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def claim(
    session: Session, project_id: str, owner: str, types: list[str] | None, lease_seconds: float
) -> tuple[TrainingRun, str] | None:
    """The oldest queued run (or one whose trainer vanished), leased under a new
    token (returned with it; only its hash is stored); ``owner`` is a label."""
    now = utcnow()
    query = (
        select(TrainingRun)
        .where(
            TrainingRun.project_id == project_id,
            or_(
                TrainingRun.status == RunStatus.QUEUED,
                and_(TrainingRun.status == RunStatus.RUNNING, TrainingRun.lease_expires_at < now),
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
    token = secrets.token_urlsafe(32)
    run.status = RunStatus.RUNNING
    run.lease_owner = owner
    run.lease_token_hash = _digest(token)
    run.lease_expires_at = now + timedelta(seconds=lease_seconds)
    run.started_at = run.started_at or now
    run.error = None
    session.flush()
    return run, token


def held(session: Session, project_id: str, run_id: str, token: str | None) -> TrainingRun:
    """The run, if ``token`` is its current lease token; 409 otherwise (fencing).

    The row is locked (PostgreSQL) so a takeover cannot commit between this check
    and the caller's write."""
    run = session.get(TrainingRun, run_id, with_for_update=True)
    if run is None or run.project_id != project_id:
        raise NotFound(f"training run {run_id!r} not found", field="run_id")
    current = run.lease_token_hash if run.status == RunStatus.RUNNING else None
    # Compare digests of equal length in constant time, even when nothing matches.
    presented = _digest(token or "")
    if not (token and current and hmac.compare_digest(current, presented)):
        raise Conflict(
            f"run {run_id} is not leased under this lease_token (status {run.status}): "
            "the lease expired and was taken over, or the token is wrong",
            field="lease_token",
        )
    return run


def heartbeat(run: TrainingRun, lease_seconds: float) -> None:
    run.lease_expires_at = utcnow() + timedelta(seconds=lease_seconds)


def add_metrics(session: Session, run: TrainingRun, points: list[MetricPoint]) -> None:
    session.add_all(RunMetric(run_id=run.id, step=p.step, metrics=p.metrics) for p in points)


def run_dir(store: Path, run: TrainingRun) -> Path:
    """The one folder of the artifact store a run may report artifacts in."""
    return store.resolve() / "runs" / run.id


def _confined(value: str, store: Path, run: TrainingRun, field: str, plain_path: bool) -> str:
    folder = run_dir(store, run)
    try:
        return str(confine(value, folder, plain_path=plain_path))
    except OutsideStore as exc:
        forms = "a file:// URI or an absolute path" if plain_path else "a file:// URI"
        raise Invalid(
            f"{field} {value[:200]!r} is refused: {exc}; run {run.id} keeps its artifacts "
            f"under {folder}/ ({forms})",
            field=field,
        ) from None


def artifact_uri(value: str, store: Path, run: TrainingRun) -> str:
    """The model's ``file://`` URI, normalised, if it lies in the run's folder; 422 otherwise."""
    return Path(_confined(value, store, run, "artifact_uri", plain_path=False)).as_uri()


def checkpoint_path(value: str, store: Path, run: TrainingRun) -> str:
    """The checkpoint (a ``file://`` URI or an absolute path) as the normalised path the
    trainer resumes from, if it lies in the run's folder; 422 otherwise."""
    return _confined(value, store, run, "checkpoint", plain_path=True)


def trained_with(run: TrainingRun, config_hash: str | None) -> None:
    """Record the hash of the config the trainer trained with; 409 unless it is the run's
    (a trainer whose config classes differ from the gateway's trained something else).
    A run stored before hashes has none to compare: its trained hash is recorded."""
    if config_hash is None:
        return
    if run.config_hash is not None and config_hash != run.config_hash:
        raise Conflict(
            f"the trainer trained config {config_hash}, but run {run.id} was submitted as "
            f"config {run.config_hash}: the trainer and the gateway read the config "
            "differently (different Charter versions?)",
            field="config_hash",
        )
    run.trained_config_hash = config_hash


def finish(
    run: TrainingRun, status: str, *, artifact_uri: str | None = None, error: str | None = None
) -> None:
    run.status = status
    run.finished_at = utcnow()
    run.lease_owner = run.lease_token_hash = run.lease_expires_at = None
    if artifact_uri is not None:
        run.artifact_uri = artifact_uri
    if error is not None:
        run.error = error
    session = Session.object_session(run)
    if session is not None:
        webhook_events.training_run_finished(session, run)


def resume(run: TrainingRun) -> None:
    """Back to the queue, keeping the last checkpoint so training continues from it."""
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        raise Conflict(
            f"only a failed or cancelled run can be resumed (status {run.status})", field="run_id"
        )
    run.status = RunStatus.QUEUED
    run.finished_at = None
    run.error = None


def cancel(run: TrainingRun) -> None:
    if run.status in FINAL_RUN_STATUSES:
        raise Conflict(f"run {run.id} already {run.status}", field="run_id")
    finish(run, RunStatus.CANCELLED)


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
