"""Policy evaluations: generate per policy, then compare pairwise per judge, as jobs.

Submitting one checks and pins every judge (its constitution as ``name@version`` and its
template version, so the compare jobs submitted later judge exactly as asked), and
stores the evaluation with one ``generate`` job per policy, all in the request's
transaction. :func:`advance` (run by the gateway's :class:`~services.gateway.policy_evals.
advancer.Advancer`) takes it from there once the generations are done.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from charter.core import policy_eval_plans as plans
from charter.core.jobs import JobStatus, JobType, job_status
from charter.core.prompts import derive_seed
from charter.db.models import Job, Label, PolicyEval, PolicyEvalJob, Prompt, utcnow
from charter.errors import CharterError, Conflict, Invalid, NotFound
from charter.settings import Settings
from services.gateway.batches import service as batches
from services.gateway.batches.service import PromptRecord
from services.gateway.jobs import service as jobs
from services.gateway.jobs.schemas import JobCreate
from services.gateway.pagination import project_page
from services.gateway.policy_evals.schemas import PolicyEvalCreate, Status


@dataclass(frozen=True)
class EvalJobRow:
    role: str
    index: int
    name: str
    job: Job


def _field_of(exc: CharterError, prefix: str) -> CharterError:
    """The same error, naming the field inside the request (``body.judges.<i>.<field>``)."""
    field = (exc.field or "").removeprefix("body.").removeprefix("params.")
    exc.field = f"{prefix}.{field}" if field else prefix
    return exc


def _seed(seed: int, *purpose: object) -> int:
    """Each job's seed, from the evaluation's and the job's purpose (a job takes < 2^62)."""
    return derive_seed(seed, *purpose) % 2**62


def _compare_spec(judge: plans.JudgeSpec, batch_id: str, seed: int, chunk: int | None) -> JobCreate:
    return JobCreate(
        type=JobType.COMPARE,
        batch_id=batch_id,
        constitution=judge.constitution,
        model=judge.model,
        params=judge.job_params(),
        seed=seed,
        chunk_size=chunk,
    )


def pin_judge(
    session: Session, project_id: str, judge: plans.JudgeSpec, settings: Settings
) -> plans.JudgeSpec:
    """The judge with its constitution as ``name@version`` and its template version
    pinned, after every check its compare job will meet (but its batch's)."""
    pinned = jobs.pin(session, project_id, _compare_spec(judge, "-", 0, None), settings)
    return judge.model_copy(
        update={"constitution": pinned.ref, "feedback_template": pinned.params["feedback_template"]}
    )


def submit(
    session: Session, project_id: str, body: PolicyEvalCreate, settings: Settings
) -> tuple[PolicyEval, list[Job]]:
    batch = batches.get(session, project_id, body.batch_id, field="body.batch_id")
    pair_count = len(body.policies) * (len(body.policies) - 1) // 2
    if batch.row_count * pair_count > plans.MAX_PAIR_ROWS:
        raise Invalid(
            f"{batch.row_count} prompts x {pair_count} pairs of policies is more than "
            f"{plans.MAX_PAIR_ROWS:,} comparisons per judge: use fewer prompts or policies",
            field="body.batch_id",
        )
    if batch.row_count == 0:
        raise Invalid("the batch has no prompts", field="body.batch_id")
    if batch.row_count * pair_count * body.bootstrap > plans.MAX_FIT_WORK:
        raise Invalid(
            f"{batch.row_count * pair_count:,} comparisons x {body.bootstrap} bootstrap "
            f"samples is more than a report fits in reasonable time "
            f"({plans.MAX_FIT_WORK:,}): use a smaller bootstrap",
            field="body.bootstrap",
        )
    seed = body.seed if body.seed is not None else secrets.randbelow(2**62)
    judges = []
    for index, judge in enumerate(body.judges):
        try:
            judges.append(pin_judge(session, project_id, judge, settings).model_dump(mode="json"))
        except CharterError as exc:
            raise _field_of(exc, f"body.judges.{index}") from exc
    policies = [
        p.model_copy(update={"constitution": p.constitution or judges[0]["constitution"]})
        for p in body.policies
    ]
    run = PolicyEval(
        project_id=project_id,
        name=body.name,
        batch_id=batch.id,
        policies=[p.model_dump(mode="json") for p in policies],
        judges=judges,
        anchor=body.anchor or policies[0].name,
        plot=list(axes)
        if (axes := plans.plot_axes([j["name"] for j in judges], body.plot))
        else None,
        bootstrap=body.bootstrap,
        seed=seed,
        chunk_size=body.chunk_size,
        stage="generating",
    )
    session.add(run)
    session.flush()
    made = []
    for index, policy in enumerate(policies):
        assert policy.constitution is not None  # filled in above
        spec = JobCreate(
            type=JobType.GENERATE,
            batch_id=batch.id,
            constitution=policy.constitution,
            model=policy.model,
            params=policy.job_params(),
            seed=_seed(seed, "generate", index),
            chunk_size=body.chunk_size,
        )
        try:
            job = jobs.submit(session, project_id, spec, settings)
        except CharterError as exc:
            raise _field_of(exc, f"body.policies.{index}") from exc
        session.add(
            PolicyEvalJob(policy_eval_id=run.id, role="generate", index=index, job_id=job.id)
        )
        made.append(job)
    session.flush()
    return run, made


def get(session: Session, project_id: str, eval_id: str) -> PolicyEval:
    run = session.get(PolicyEval, eval_id)
    if run is None or run.project_id != project_id:
        raise NotFound(f"policy evaluation {eval_id!r} not found", field="eval_id")
    return run


def page(
    session: Session, project_id: str, cursor: str | None, limit: int
) -> tuple[list[PolicyEval], str | None]:
    return project_page(session, PolicyEval, project_id, cursor, limit)


def run_jobs(session: Session, run: PolicyEval) -> list[EvalJobRow]:
    """Its generate jobs (policy order), then its compare jobs (judge order)."""
    query = (
        select(PolicyEvalJob, Job)
        .join(Job, Job.id == PolicyEvalJob.job_id)
        .where(PolicyEvalJob.policy_eval_id == run.id)
    )
    rows = []
    for e, job in session.execute(query):
        names = run.policies if e.role == "generate" else run.judges
        rows.append(EvalJobRow(e.role, e.index, names[e.index]["name"], job))
    return sorted(rows, key=lambda r: (r.role != "generate", r.index))


def job_statuses(rows: Sequence[EvalJobRow], counts: dict[str, dict[str, int]]) -> list[JobStatus]:
    return [job_status(counts[r.job.id], r.job.status == JobStatus.CANCELLED) for r in rows]


def status(
    run: PolicyEval, rows: Sequence[EvalJobRow], counts: dict[str, dict[str, int]]
) -> Status:
    """Failed when there was nothing to compare; cancelled when it or a job was;
    completed when the judges' jobs are; queued until any job starts; else running."""
    if run.stage == "failed":
        return "failed"
    statuses = job_statuses(rows, counts)
    if run.stage == "cancelled" or JobStatus.CANCELLED in statuses:
        return "cancelled"
    if run.stage == "comparing" and all(s == JobStatus.COMPLETED for s in statuses):
        return "completed"
    if all(s == JobStatus.QUEUED for s in statuses):
        return "queued"
    return "running"


def _cancel_jobs(session: Session, run: PolicyEval) -> None:
    """Cancel every job of ``run`` that has not finished (a finished one stays)."""
    rows = run_jobs(session, run)
    counts = jobs.counts(session, [r.job.id for r in rows])
    for r, state in zip(rows, job_statuses(rows, counts), strict=True):
        if state not in (JobStatus.COMPLETED, JobStatus.CANCELLED):
            with contextlib.suppress(Conflict):  # it completed meanwhile: its labels stand
                jobs.cancel(session, run.project_id, r.job.id)


def cancel(session: Session, project_id: str, eval_id: str) -> PolicyEval:
    """Cancel every unfinished job; a cancelled evaluation is never advanced.

    The row is locked first, so a cancel and an advance are one after the other: a
    cancel that waited for an advance sees (and cancels) the judges' new jobs."""
    get(session, project_id, eval_id)
    run = session.scalars(
        select(PolicyEval)
        .where(PolicyEval.id == eval_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    _cancel_jobs(session, run)
    if run.stage == "generating":  # the advancer never looks at it again
        run.stage = "cancelled"
    return run


def _generations(session: Session, job_id: str) -> dict[int, str]:
    """Prompt position -> the generate job's answer."""
    query = (
        select(Prompt.position, Label.completion)
        .join(Label, Label.prompt_id == Prompt.id)
        .where(Label.job_id == job_id)
    )
    return {position: text for position, text in session.execute(query) if text is not None}


def _pair_rows(
    session: Session, run: PolicyEval, slots: Sequence[plans.Slot], answers: list[dict[int, str]]
) -> list[PromptRecord]:
    """The pairs batch's rows. A list, read before the batch's COPY starts: the COPY
    holds the connection, so nothing may query it while the rows stream in."""
    source = {
        position: (prompt, messages)
        for position, prompt, messages in session.execute(
            select(Prompt.position, Prompt.prompt, Prompt.messages).where(
                Prompt.batch_id == run.batch_id
            )
        )
    }
    return [
        (*source[s.prompt], None, answers[s.a][s.prompt], answers[s.b][s.prompt]) for s in slots
    ]


def advance(session: Session, run: PolicyEval, settings: Settings) -> list[Job]:
    """Once every generate job has completed: the pairs batch and one compare job per
    judge, in the caller's transaction (with ``run`` row-locked). Returns the jobs to
    publish after commit; nothing while a generation runs or when one was cancelled.
    With nothing to compare, or a judge that can no longer be submitted, the evaluation
    fails with the reason."""
    rows = [r for r in run_jobs(session, run) if r.role == "generate"]
    counts = jobs.counts(session, [r.job.id for r in rows])
    statuses = job_statuses(rows, counts)
    if JobStatus.CANCELLED in statuses:  # a generation was cancelled: so is the evaluation
        _cancel_jobs(session, run)
        run.stage, run.advanced_at = "cancelled", utcnow()
        return []
    if any(s != JobStatus.COMPLETED for s in statuses):
        return []
    answers = [_generations(session, r.job.id) for r in rows]
    answered: dict[int, set[int]] = {}
    for index, texts in enumerate(answers):
        for position in texts:
            answered.setdefault(position, set()).add(index)
    slots = plans.slots(answered, len(rows))
    run.advanced_at = utcnow()
    anchor = next(i for i, p in enumerate(run.policies) if p["name"] == run.anchor)
    if not answers[anchor]:
        run.stage, run.error = "failed", f"the anchor policy {run.anchor!r} answered no prompt"
        return []
    if not slots:
        run.stage, run.error = (
            "failed",
            "no prompt was answered by two policies: nothing to compare",
        )
        return []
    made, failing = [], "the pairs batch"
    try:
        with session.begin_nested():  # a judge that fails leaves no half-made stage
            pairs = batches.create(
                session,
                run.project_id,
                f"policy-eval:{run.id}:pairs",
                _pair_rows(session, run, slots, answers),
            )
            for index, config in enumerate(run.judges):
                failing = f"judge {config['name']!r}"
                spec = _compare_spec(
                    plans.JudgeSpec.model_validate(config),
                    pairs.id,
                    _seed(run.seed, "compare", index),
                    run.chunk_size,
                )
                job = jobs.submit(session, run.project_id, spec, settings)
                session.add(
                    PolicyEvalJob(policy_eval_id=run.id, role="compare", index=index, job_id=job.id)
                )
                made.append(job)
            session.flush()
    except CharterError as exc:
        run.stage, run.error = "failed", f"{failing} cannot be submitted: {exc}"
        return []
    run.stage, run.pairs_batch_id = "comparing", pairs.id
    run.slots = [[s.prompt, s.a, s.b] for s in slots]
    run.comparisons = len(slots)
    return made
