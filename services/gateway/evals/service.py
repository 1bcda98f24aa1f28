"""Judge evaluations: a gold set scored by judge configurations, as ordinary jobs.

Submitting one stores the run, its variants batch (with injection) and one ``compare``
job per configuration and variant, all in the request's transaction; the jobs are
published after commit like any other. Reports are computed from the stored labels
when asked (:mod:`services.gateway.evals.report`), so they always say what the
database holds.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from charter.core import eval_plans
from charter.core import injection as attacks_suite
from charter.core.jobs import ACTIVE_STATES, ItemState, JobStatus, JobType, job_status
from charter.db.models import EvalJob, EvalRun, GoldSet, Job
from charter.errors import CharterError, Conflict, Invalid, NotFound
from charter.settings import Settings
from services.gateway.batches import service as batches
from services.gateway.evals.schemas import EvalCreate
from services.gateway.gold import service as gold_sets
from services.gateway.jobs import service as jobs
from services.gateway.jobs.schemas import JobCreate
from services.gateway.pagination import project_page


@dataclass(frozen=True)
class RunJob:
    """One job of a run, with where it sits in it."""

    config: str
    config_index: int
    variant: eval_plans.Variant
    job: Job


def _variants_batch(
    session: Session,
    project_id: str,
    gold: GoldSet,
    spec: eval_plans.InjectionSpec,
    attacks: Sequence[attacks_suite.Attack],
) -> str:
    items = gold_sets.items(session, gold, limit=spec.max_items)
    rows = eval_plans.variant_rows(
        (((i["response_a"], i["response_b"]), i["answer"]) for i in items), attacks
    )
    conversations = [(i["prompt"], i["messages"]) for i in items for _ in attacks]
    batch = batches.create(
        session,
        project_id,
        f"gold:{gold.name}@{gold.version}:injected",
        (
            (prompt, messages, None, a, b)
            for (prompt, messages), (a, b) in zip(conversations, rows, strict=True)
        ),
    )
    return batch.id


def _config_error(exc: CharterError, index: int) -> CharterError:
    """The same error, naming the configuration's field (``body.configs.<i>.<field>``)."""
    field = (exc.field or "").removeprefix("body.").removeprefix("params.")
    exc.field = f"body.configs.{index}.{field}" if field else f"body.configs.{index}"
    return exc


def submit(
    session: Session, project_id: str, body: EvalCreate, settings: Settings
) -> tuple[EvalRun, list[RunJob]]:
    gold = gold_sets.resolve(session, project_id, body.gold_set, field="body.gold_set")
    try:
        configs = eval_plans.named(body.configs)
    except ValueError as exc:
        raise Invalid(str(exc), field="body.configs") from exc
    spec = body.injection
    seed = body.seed if body.seed is not None else secrets.randbelow(2**62)
    variants_batch = injection = None
    if spec is not None:
        attacks = spec.chosen()
        variants_batch = _variants_batch(session, project_id, gold, spec, attacks)
        injection = {
            "attacks": [a.id for a in attacks],
            "suite_version": attacks_suite.SUITE_VERSION,
            "suite_hash": attacks_suite.suite_hash(),
            "gold_items": min(spec.max_items, gold.row_count),
            "defences_off": spec.defences_off,
        }
    run = EvalRun(
        project_id=project_id,
        name=body.name,
        gold_set_id=gold.id,
        configs=[c.model_dump(mode="json") for c in configs],
        injection=injection,
        variants_batch_id=variants_batch,
        seed=seed,
    )
    session.add(run)
    session.flush()
    made: list[RunJob] = []
    for index, config in enumerate(configs):
        assert config.name is not None  # named() filled it in
        for variant in eval_plans.variants(spec):
            batch_id = gold.batch_id
            if eval_plans.injected(variant):
                assert variants_batch is not None  # variants() has injected ones only then
                batch_id = variants_batch
            job_spec = JobCreate(
                type=JobType.COMPARE,
                batch_id=batch_id,
                constitution=config.constitution,
                model=config.model,
                params=config.job_params(neutralise=eval_plans.defended(variant)),
                seed=seed,
                chunk_size=body.chunk_size,
            )
            try:
                job = jobs.submit(session, project_id, job_spec, settings, evaluation=True)
            except CharterError as exc:
                raise _config_error(exc, index) from exc
            session.add(
                EvalJob(eval_run_id=run.id, config_index=index, variant=variant, job_id=job.id)
            )
            made.append(RunJob(config.name, index, variant, job))
    session.flush()
    return run, made


def get(session: Session, project_id: str, run_id: str) -> EvalRun:
    run = session.get(EvalRun, run_id)
    if run is None or run.project_id != project_id:
        raise NotFound(f"evaluation {run_id!r} not found", field="eval_id")
    return run


def page(
    session: Session, project_id: str, cursor: str | None, limit: int
) -> tuple[list[EvalRun], str | None]:
    return project_page(session, EvalRun, project_id, cursor, limit)


def run_jobs(session: Session, run: EvalRun) -> list[RunJob]:
    query = (
        select(EvalJob, Job)
        .join(Job, Job.id == EvalJob.job_id)
        .where(EvalJob.eval_run_id == run.id)
        .order_by(EvalJob.config_index, EvalJob.variant)
    )
    names = [c["name"] for c in run.configs]
    order = {v: i for i, v in enumerate(eval_plans.VARIANTS)}
    rows = [
        RunJob(names[e.config_index], e.config_index, e.variant, job)  # type: ignore[arg-type]
        for e, job in session.execute(query)
    ]
    return sorted(rows, key=lambda r: (r.config_index, order[r.variant]))


def status(jobs_of_run: Sequence[RunJob], counts: dict[str, dict[str, int]]) -> JobStatus:
    """Running while any job is; cancelled when one was; else completed."""
    statuses = [
        job_status(counts[r.job.id], r.job.status == JobStatus.CANCELLED) for r in jobs_of_run
    ]
    if any(s in (JobStatus.QUEUED, JobStatus.RUNNING) for s in statuses):
        return (
            JobStatus.QUEUED if all(s == JobStatus.QUEUED for s in statuses) else JobStatus.RUNNING
        )
    if JobStatus.CANCELLED in statuses:
        return JobStatus.CANCELLED
    return JobStatus.COMPLETED


def finished(counts: dict[str, int]) -> int:
    return sum(n for state, n in counts.items() if ItemState(state) not in ACTIVE_STATES)


def cancel(session: Session, project_id: str, run_id: str) -> EvalRun:
    """Cancel every job of the run that has not finished (a finished one stays as it is)."""
    run = get(session, project_id, run_id)
    jobs_of_run = run_jobs(session, run)
    counts = jobs.counts(session, [r.job.id for r in jobs_of_run])
    for r in jobs_of_run:
        if job_status(counts[r.job.id], r.job.status == JobStatus.CANCELLED) not in (
            JobStatus.COMPLETED,
            JobStatus.CANCELLED,
        ):
            with contextlib.suppress(Conflict):  # it completed meanwhile: its labels stand
                jobs.cancel(session, project_id, r.job.id)
    return run
