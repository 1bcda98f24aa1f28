"""A stage's kind to the service that submits, polls and cancels it.

Each kind is an ordinary Charter object made by its own service, exactly as its own
route would make it: a stage is never special-cased downstream. Submitting happens in
the advancer's transaction; what must happen after commit (publishing a job's chunks,
waking the dataset freezer) is returned as :class:`After`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from charter.core.jobs import ItemState, RunStatus, job_status
from charter.core.jobs import JobStatus as JS
from charter.core.pipeline_plans import StageKind
from charter.core.pipeline_plans import StageStatus as S
from charter.db.models import DatasetVersion, Job, PipelineStage, PolicyEval, TrainingRun
from charter.errors import Conflict
from charter.settings import Settings
from services.gateway.datasets import service as datasets
from services.gateway.datasets.schemas import DatasetCreate
from services.gateway.jobs import service as jobs
from services.gateway.jobs.schemas import JobCreate
from services.gateway.policy_evals import service as policy_evals
from services.gateway.policy_evals.schemas import PolicyEvalCreate
from services.gateway.runs import service as runs
from services.gateway.runs.schemas import RunCreate


@dataclass
class After:
    """Effects of a pass to run once its transaction has committed."""

    jobs: list[tuple[str, str, int]] = field(default_factory=list)
    """(job id, model, chunk count) to publish."""
    wake_freezer: bool = False

    def publish(self, made: list[Job]) -> None:
        self.jobs += [(j.id, j.model, j.chunk_count) for j in made]


def submit(
    session: Session,
    project_id: str,
    row: PipelineStage,
    body: dict[str, Any],
    settings: Settings,
    after: After,
) -> None:
    """Make the stage's object from ``body`` and point ``row`` at it. A
    :class:`~charter.errors.CharterError` says why it cannot be made."""
    kind: StageKind = row.kind  # type: ignore[assignment]
    match kind:
        case "job":
            job = jobs.submit(session, project_id, JobCreate.model_validate(body), settings)
            row.job_id = job.id
            after.publish([job])
        case "dataset":
            _, version = datasets.create(session, project_id, DatasetCreate.model_validate(body))
            row.dataset_version_id = version.id
            after.wake_freezer = True
        case "run":
            run = runs.create(session, project_id, RunCreate.model_validate(body).root)
            row.run_id = run.id
        case "policy_eval":
            evaluation, made = policy_evals.submit(
                session, project_id, PolicyEvalCreate.model_validate(body), settings
            )
            row.policy_eval_id = evaluation.id
            after.publish(made)


def poll(session: Session, row: PipelineStage) -> tuple[S, str | None, str | None]:
    """(status, output, error) of the object a submitted stage made."""
    kind: StageKind = row.kind  # type: ignore[assignment]
    match kind:
        case "job":
            assert row.job_id is not None
            job = session.get(Job, row.job_id)
            assert job is not None
            counts = jobs.counts(session, [job.id])[job.id]
            state = job_status(counts, job.status == JS.CANCELLED)
            if state == JS.CANCELLED:
                return S.FAILED, None, f"job {job.id} was cancelled"
            if state != JS.COMPLETED:
                return S.SUBMITTED, None, None
            if not counts.get(ItemState.DONE):
                return S.FAILED, None, f"job {job.id} labelled nothing ({_counts(counts)})"
            return S.COMPLETED, job.id, None
        case "dataset":
            assert row.dataset_version_id is not None
            version = session.get(DatasetVersion, row.dataset_version_id)
            assert version is not None
            if version.state == "freezing":
                return S.SUBMITTED, None, None
            ref = f"{row.inputs['body']['name']}@{version.version}"
            if version.state != "ready":
                return S.FAILED, None, f"dataset {ref} is {version.state}: {version.error}"
            return S.COMPLETED, ref, None
        case "run":
            assert row.run_id is not None
            run = session.get(TrainingRun, row.run_id)
            assert run is not None
            if run.status == RunStatus.COMPLETED:
                return S.COMPLETED, run.id, None
            if run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
                return (
                    S.FAILED,
                    None,
                    f"run {run.id} {run.status}: {run.error or 'no reason given'}",
                )
            return S.SUBMITTED, None, None
        case "policy_eval":
            assert row.policy_eval_id is not None
            evaluation = session.get(PolicyEval, row.policy_eval_id)
            assert evaluation is not None
            rows = policy_evals.run_jobs(session, evaluation)
            state = policy_evals.status(
                evaluation, rows, jobs.counts(session, [r.job.id for r in rows])
            )
            if state == "completed":
                return S.COMPLETED, evaluation.id, None
            if state in ("failed", "cancelled"):
                why = evaluation.error or "a job was cancelled"
                return S.FAILED, None, f"policy evaluation {evaluation.id} {state}: {why}"
            return S.SUBMITTED, None, None


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


def cancel(session: Session, project_id: str, row: PipelineStage) -> None:
    """Stop the work of a submitted stage; what finished meanwhile stands. A freezing
    dataset version cannot be stopped: it finishes, and nothing reads it."""
    with contextlib.suppress(Conflict):  # it finished meanwhile
        if row.job_id is not None:
            jobs.cancel(session, project_id, row.job_id)
        elif row.run_id is not None:
            runs.cancel(runs.get(session, project_id, row.run_id))
        elif row.policy_eval_id is not None:
            policy_evals.cancel(session, project_id, row.policy_eval_id)


def resume_run(session: Session, project_id: str, row: PipelineStage) -> bool:
    """Put a failed or cancelled run stage back in the queue, keeping its checkpoint;
    False when it is not one (it is tried again as a new attempt instead)."""
    if row.run_id is None:
        return False
    run = runs.get(session, project_id, row.run_id)
    if run.status not in (RunStatus.FAILED, RunStatus.CANCELLED):
        return False
    runs.resume(run)
    return True
