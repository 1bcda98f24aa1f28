"""The dashboard's numbers, from the database, scoped to one project.

Counts and per-minute buckets are aggregated in SQL (a bucket is the integer epoch
second divided by the bucket width, spelled per dialect). The judge statistics need
each label's values, so they read only the columns they use (response lengths via
SQL ``length()``: the texts never leave the database), streamed, and at most
``LABEL_CAP`` of the most recent labels per call (``sampled`` says when the cap hit).
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, assert_never

from sqlalchemy import BigInteger, ColumnElement, Integer, cast, distinct, func, or_, select
from sqlalchemy.orm import Session

from charter.core import judge_stats
from charter.core.jobs import (
    ITEM_STATES,
    ItemState,
    JobStatus,
    JobType,
    dataset_kind,
    job_status,
    serves,
)
from charter.db.models import EvalJob, Job, Label, WorkItem, utcnow
from charter.settings import Settings
from services.gateway.jobs import service as jobs
from services.gateway.stats.schemas import (
    Chain,
    ChainRound,
    EstimateOut,
    JobStats,
    JudgeSummaryOut,
    MinuteCount,
    ModelStats,
    Overview,
    QueueDepth,
    ReasonCount,
    Stuck,
    UnservedJob,
    WorkerOnline,
)
from services.gateway.workers import service as workers

LABEL_CAP = 200_000
"""Most labels one call reads for the judge statistics (the most recent ones)."""
REASON_CAP = 200_000
"""Most failed/abstained items one call reads to group their reasons."""
REASON_CHARS = 120
TOP_REASONS = 20
TIMELINE_POINTS = 1440
"""A job's timeline has at most this many buckets (one minute each, wider for long jobs)."""
FINISHED_STATES = (ItemState.DONE, ItemState.ABSTAINED, ItemState.FAILED)
PREFERENCE_TYPES = tuple(t.value for t in JobType if dataset_kind(t) == "preference")
STREAM_ROWS = 5000


# --------------------------------------------------------------------------- helpers


def _epoch_seconds(session: Session, column: Any) -> ColumnElement[int]:
    """Whole seconds since 1970 of a stored UTC time, on either backend."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", column)), BigInteger)
    # SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff' in UTC; strftime('%s') reads it as UTC.
    return cast(func.strftime("%s", column), Integer)


def _bucket(session: Session, column: Any, seconds: int) -> ColumnElement[int]:
    # Floor division: ``/`` is true division in SQLAlchemy 2, and PostgreSQL rounds
    # a numeric when it is cast back to an integer.
    return _epoch_seconds(session, column) // seconds


def _at(bucket: int, seconds: int) -> datetime:
    return datetime.fromtimestamp(bucket * seconds, UTC)


def _floor(moment: datetime, seconds: int) -> int:
    return math.floor(moment.timestamp()) // seconds


def _estimate(estimate: judge_stats.Estimate) -> EstimateOut:
    return EstimateOut.model_validate(estimate)


def _summary(summary: judge_stats.JudgeSummary) -> JudgeSummaryOut:
    return JudgeSummaryOut.model_validate(summary)


_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.IGNORECASE)
_SPACE = re.compile(r"\s+")


def short_reason(text: str | None) -> str:
    """A groupable reason: numbers as ``#``, whitespace folded, at most REASON_CHARS."""
    if not text:
        return "(no reason recorded)"
    reason = _SPACE.sub(" ", _NUMBER.sub("#", text)).strip()
    return reason if len(reason) <= REASON_CHARS else reason[: REASON_CHARS - 1] + "…"


def _reasons(texts: Iterator[str | None]) -> list[ReasonCount]:
    counts = Counter(short_reason(t) for t in texts)
    top = counts.most_common(TOP_REASONS)
    rest = sum(counts.values()) - sum(n for _, n in top)
    out = [ReasonCount(reason=r, count=n) for r, n in top]
    if rest:
        out.append(ReasonCount(reason="(other reasons)", count=rest))
    return out


def _pair_labels(
    session: Session, *where: Any
) -> Iterator[tuple[str, str, str, judge_stats.PairLabel]]:
    """(job_id, model, template_version, label) of the most recent LABEL_CAP labels with
    a final p_a matching ``where``, streamed."""
    query = (
        select(
            Label.job_id,
            Label.model,
            Label.template_version,
            Label.p_a,
            Label.p_a_forward,
            Label.p_a_swapped,
            Label.swap_disagreement,
            func.length(Label.response_a),
            func.length(Label.response_b),
            Label.principle_ids,
        )
        .where(Label.p_a.is_not(None), *where)
        .order_by(Label.id.desc())
        .limit(LABEL_CAP)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for row in session.execute(query):
        yield (
            row[0],
            row[1],
            row[2],
            judge_stats.PairLabel(
                p_a=row[3],
                p_a_forward=row[4],
                p_a_swapped=row[5],
                swap_disagreement=row[6],
                len_a=row[7],
                len_b=row[8],
                principle_ids=tuple(row[9] or ()),
            ),
        )


# --------------------------------------------------------------------------- overview

LIVE_BEATS = 3
"""A worker is live while its last heartbeat is at most this many intervals old."""


def live_window(settings: Settings) -> float:
    """Seconds since its last heartbeat within which a worker counts as live."""
    return LIVE_BEATS * settings.worker_heartbeat_seconds


def live_workers(session: Session, project_id: str, since: datetime) -> list[WorkerOnline]:
    """Workers seen since ``since``, as ``/v1/workers`` shows them (this project's counts),
    with the chunk each is running."""
    return [
        WorkerOnline.model_validate(worker).model_copy(update={"items_done": done})
        for worker, done in workers.fleet(session, project_id)
        if worker.last_seen >= since
    ]


def overview(
    session: Session,
    project_id: str,
    *,
    hours: int = 6,
    now: datetime | None = None,
    live_seconds: float = 30.0,
) -> Overview:
    """The project at a glance: queues, live workers, recent throughput and failures,
    the outbox backlog and what is stuck."""
    now = now or utcnow()
    since = now - timedelta(hours=hours)
    active = Job.project_id == project_id, Job.finished_at.is_(None)
    # Jobs that can have changed in the window: the rest are left unread (their items
    # and labels are older), so the window's counts read only recent jobs' rows.
    recent_jobs = select(Job.id).where(
        Job.project_id == project_id, or_(Job.finished_at.is_(None), Job.finished_at >= since)
    )

    queue = [
        QueueDepth(model=model, state=ItemState(state), count=n)
        for model, state, n in session.execute(
            select(Job.model, WorkItem.status, func.count())
            .join(Job, Job.id == WorkItem.job_id)
            .where(*active)
            .group_by(Job.model, WorkItem.status)
            .order_by(Job.model, WorkItem.status)
        )
    ]
    active_jobs = session.execute(
        select(Job.id, Job.type, Job.model, Job.created_at).where(*active).order_by(Job.created_at)
    ).all()
    used_models = set(
        session.scalars(select(Job.model).where(Job.project_id == project_id).distinct())
    )
    live = live_workers(session, project_id, now - timedelta(seconds=live_seconds))
    served = [m for w in live for m in w.models]

    minute = _bucket(session, Label.created_at, 60)
    per_minute = dict(
        session.execute(
            select(minute, func.count())
            .where(
                Label.project_id == project_id,
                Label.job_id.in_(recent_jobs),
                Label.created_at >= since,
            )
            .group_by(minute)
        ).all()
    )
    first, last = _floor(since, 60), _floor(now, 60)
    labels_per_minute = [
        MinuteCount(minute=_at(m, 60), count=int(per_minute.get(m, 0)))
        for m in range(first, last + 1)
    ]

    finished = dict(
        session.execute(
            select(WorkItem.status, func.count())
            .where(
                WorkItem.job_id.in_(recent_jobs),
                WorkItem.status.in_(FINISHED_STATES),
                WorkItem.updated_at >= since,
            )
            .group_by(WorkItem.status)
        ).all()
    )
    total = sum(finished.values())

    unpublished = (
        select(WorkItem.job_id, WorkItem.chunk)
        .join(Job, Job.id == WorkItem.job_id)
        .where(
            *active,
            WorkItem.status == ItemState.QUEUED,
            WorkItem.published_at.is_(None),
        )
        .distinct()
        .subquery()
    )
    backlog = session.scalar(select(func.count()).select_from(unpublished)) or 0
    expired = (
        session.scalar(
            select(func.count())
            .select_from(WorkItem)
            .join(Job, Job.id == WorkItem.job_id)
            .where(
                *active,
                WorkItem.status == ItemState.RUNNING,
                WorkItem.lease_expires_at < now,
            )
        )
        or 0
    )
    return Overview(
        now=now,
        hours=hours,
        queue=queue,
        workers=[w for w in live if any(serves(w.models, m) for m in used_models)],
        live_seconds=live_seconds,
        labels_per_minute=labels_per_minute,
        finished_items=total,
        failure_rate=_estimate(judge_stats.wilson(finished.get(ItemState.FAILED, 0), total)),
        abstention_rate=_estimate(judge_stats.wilson(finished.get(ItemState.ABSTAINED, 0), total)),
        outbox_backlog=backlog,
        stuck=Stuck(
            expired_leases=expired,
            unserved_jobs=[
                UnservedJob(
                    job_id=j.id, type=JobType(j.type), model=j.model, created_at=j.created_at
                )
                for j in active_jobs
                if not serves(served, j.model)
            ],
        ),
    )


# --------------------------------------------------------------------------- one job


def _timeline(session: Session, job: Job, end: datetime) -> tuple[int, list[tuple[datetime, int]]]:
    """(bucket seconds, [(bucket end, cumulative finished items)]) from creation to ``end``."""
    start = job.created_at
    span = max((end - start).total_seconds(), 0.0)
    seconds = 60 * max(1, math.ceil(span / 60 / TIMELINE_POINTS))
    bucket = _bucket(session, WorkItem.updated_at, seconds)
    per_bucket = dict(
        session.execute(
            select(bucket, func.count())
            .where(WorkItem.job_id == job.id, WorkItem.status.in_(FINISHED_STATES))
            .group_by(bucket)
        ).all()
    )
    first = _floor(start, seconds)
    last = max(_floor(end, seconds), first)
    # Times outside [created, end] (clock skew between hosts) count at the nearest edge,
    # so every finished item is in the timeline and its length stays bounded.
    edges: Counter[int] = Counter()
    for b, n in per_bucket.items():
        edges[min(max(int(b), first), last)] += int(n)
    points, total = [], 0
    for b in range(first, last + 1):
        total += edges[b]
        # A bucket's count holds at its end; the bucket in progress holds it now.
        points.append((min(_at(b + 1, seconds), end), total))
    return seconds, points


def _chains(session: Session, job_id: str, limit: int) -> list[Chain]:
    rows = session.execute(
        select(
            Label.id,
            Label.prompt_id,
            Label.conversation,
            Label.response,
            Label.completion,
            Label.rounds,
        )
        .where(Label.job_id == job_id)
        .order_by(Label.id)
        .limit(limit)
    )
    return [
        Chain(
            label_id=row.id,
            prompt_id=row.prompt_id,
            conversation=row.conversation,
            response=row.response,
            completion=row.completion,
            rounds=[
                ChainRound.model_validate(r)
                for r in sorted(row.rounds or [], key=lambda r: int(r.get("round", 0)))
            ],
        )
        for row in rows
    ]


def job_stats(session: Session, project_id: str, job_id: str, *, chains: int = 5) -> JobStats:
    """One job's progress, failures and, by its type, judge or critique statistics."""
    job = jobs.get(session, project_id, job_id)  # NotFound naming job_id for another project's
    job_type = JobType(job.type)
    counts = jobs.counts(session, [job.id])[job.id]
    remaining = counts.get(ItemState.QUEUED, 0) + counts.get(ItemState.RUNNING, 0)
    end = (job.finished_at or utcnow()) if remaining == 0 else utcnow()
    seconds, points = _timeline(session, job, end)
    rate, eta = judge_stats.throughput_and_eta(points, remaining)

    def reasons(state: ItemState) -> list[ReasonCount]:
        return _reasons(
            iter(
                session.scalars(
                    select(WorkItem.last_error)
                    .where(WorkItem.job_id == job.id, WorkItem.status == state)
                    .limit(REASON_CAP)
                    .execution_options(yield_per=STREAM_ROWS)
                )
            )
        )

    label_count = (
        session.scalar(select(func.count()).select_from(Label).where(Label.job_id == job.id)) or 0
    )
    judge: JudgeSummaryOut | None = None
    principles: dict[str, JudgeSummaryOut] = {}
    draws: dict[str, int] | None = None
    samples: list[Chain] = []
    kind = dataset_kind(job_type)
    match kind:
        case "preference":
            labels = [p for *_, p in _pair_labels(session, Label.job_id == job.id)]
            judge = _summary(judge_stats.judge_summary(labels))
            principles = {k: _summary(v) for k, v in judge_stats.by_principle(labels).items()}
        case "sft":
            draws = judge_stats.principle_draws(
                session.scalars(
                    select(Label.principle_ids)
                    .where(Label.job_id == job.id)
                    .order_by(Label.id.desc())
                    .limit(LABEL_CAP)
                    .execution_options(yield_per=STREAM_ROWS)
                )
            )
            samples = _chains(session, job.id, chains)
        case _:
            assert_never(kind)
    return JobStats(
        job_id=job.id,
        type=job_type,
        model=job.model,
        status=job_status(counts, job.status == JobStatus.CANCELLED),
        item_count=job.item_count,
        counts={state: counts.get(state, 0) for state in ITEM_STATES},
        bucket_seconds=seconds,
        timeline=[MinuteCount(minute=t, count=c) for t, c in points],
        items_per_minute=rate,
        eta_seconds=eta,
        failures=reasons(ItemState.FAILED),
        abstentions=reasons(ItemState.ABSTAINED),
        labels=label_count,
        sampled=label_count > LABEL_CAP,
        judge=judge,
        by_principle=principles,
        principle_draws=draws,
        chains=samples,
    )


# --------------------------------------------------------------------------- models


def model_stats(session: Session, project_id: str) -> list[ModelStats]:
    """Per judge (model, template version): bias statistics over the project's
    compare/rl_cai labels, most labels first. Judge evaluations' labels are left out:
    gold items and injected (some undefended) variants are not what the judge labels in
    production, and each evaluation's own report measures them."""
    scope = (
        Label.project_id == project_id,
        Label.kind.in_(PREFERENCE_TYPES),
        Label.job_id.not_in(select(EvalJob.job_id)),
    )
    totals = {
        (model, template): (n_jobs, n_labels)
        for model, template, n_jobs, n_labels in session.execute(
            select(
                Label.model,
                Label.template_version,
                func.count(distinct(Label.job_id)),
                func.count(),
            )
            .where(*scope, Label.p_a.is_not(None))
            .group_by(Label.model, Label.template_version)
        )
    }
    groups: dict[tuple[str, str], list[judge_stats.PairLabel]] = defaultdict(list)
    for _job, model, template, label in _pair_labels(session, *scope):
        groups[(model, template)].append(label)
    out = []
    for key, (n_jobs, n_labels) in totals.items():
        sample = groups.get(key, [])
        out.append(
            ModelStats(
                model=key[0],
                template_version=key[1],
                jobs=n_jobs,
                labels=n_labels,
                sampled=len(sample) < n_labels,
                judge=_summary(judge_stats.judge_summary(sample)),
            )
        )
    return sorted(out, key=lambda m: (-m.labels, m.model, m.template_version))
