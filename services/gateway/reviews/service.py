"""Human review of AI labels: queues, verdicts, agreement, export and import.

A queue is a seeded sample of a job's labels (:mod:`charter.core.review_sampling`).
A verdict is stored in ``review_verdicts``, never in the label: one row per reviewer
(API key + optional name) and label, replaced in place by the same reviewer's next
verdict (``revision`` counts them, ``history`` keeps the earlier ones). When every
item of a queue has a verdict, ``review.target_reached`` is emitted in the same
transaction. The numbers are :mod:`charter.core.agreement`'s.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import ColumnElement, case, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from charter import webhook_events
from charter.core import agreement, review_sampling
from charter.core.jobs import JobType, dataset_kind, principle_kind
from charter.db.models import (
    ApiKey,
    ConstitutionVersion,
    DatasetRow,
    Job,
    Label,
    ReviewQueue,
    ReviewQueueItem,
    ReviewVerdict,
    as_utc,
    utcnow,
)
from charter.errors import Invalid, NotFound
from services.gateway.pagination import id_page
from services.gateway.reviews.schemas import ImportLine, QueueCreate, VerdictCreate

TARGET_REACHED = "review.target_reached"


def is_comparison(job_type: str) -> bool:
    """Comparison labels (A/B) get a choice; revision labels get ``satisfies``."""
    return dataset_kind(JobType(job_type)) == "preference"


def _usable(comparison: bool) -> ColumnElement[bool]:
    """Labels with an AI verdict to review (abstentions have none)."""
    return Label.p_a.is_not(None) if comparison else Label.completion.is_not(None)


def job(session: Session, project_id: str, job_id: str) -> Job:
    row = session.get(Job, job_id)
    if row is None or row.project_id != project_id:
        raise NotFound(f"job {job_id!r} not found", field="job_id")
    return row


# --------------------------------------------------------------------------- queues


def _reviewable(found: Job) -> None:
    """Only a label with an AI verdict (a choice, a revision under a principle) is
    reviewed: a policy's plain generation has none."""
    if principle_kind(JobType(found.type)) == "none":
        raise Invalid(f"a {found.type} job's labels carry no AI verdict to review", field="job_id")


def open_queue(session: Session, key: ApiKey, job_id: str, spec: QueueCreate) -> ReviewQueue:
    found = job(session, key.project_id, job_id)
    _reviewable(found)
    comparison = is_comparison(found.type)
    if spec.by in ("confidence", "swap_disagreement") and not comparison:
        raise Invalid(
            f"'{spec.by}' applies to comparison jobs only; a {found.type} job has no P(A)",
            field="by",
        )
    rows = session.execute(
        select(Label.id, Label.principle_ids, Label.p_a, Label.swap_disagreement).where(
            Label.job_id == found.id, _usable(comparison)
        )
    )
    candidates = [
        review_sampling.Candidate(i, tuple(principles or ()), p_a, swapped)
        for i, principles, p_a, swapped in rows
    ]
    seed = 0 if spec.seed is None else spec.seed
    picks = review_sampling.sample(candidates, spec.size, spec.strategy, spec.by, seed)
    if not picks:
        what = "swapped comparisons" if spec.by == "swap_disagreement" else "labels"
        raise Invalid(f"job {job_id!r} has no {what} to review yet", field="job_id")
    queue = ReviewQueue(
        project_id=key.project_id,
        job_id=found.id,
        strategy=spec.strategy,
        by=spec.by,
        seed=seed,
        size=len(picks),
        requested_size=spec.size,
        created_by_key_id=key.id,
    )
    session.add(queue)
    session.flush()
    session.add_all(
        ReviewQueueItem(queue_id=queue.id, position=i, label_id=p.label_id, stratum=p.stratum)
        for i, p in enumerate(picks)
    )
    session.flush()
    return queue


def queue(session: Session, project_id: str, queue_id: str, *, lock: bool = False) -> ReviewQueue:
    """The project's queue; ``lock``: row-locked until the transaction ends, so that of
    two verdicts completing a queue at once, the second sees the first (and emits)."""
    row = (
        session.get(ReviewQueue, queue_id, with_for_update=True, populate_existing=True)
        if lock
        else session.get(ReviewQueue, queue_id)
    )
    if row is None or row.project_id != project_id:
        raise NotFound(f"review queue {queue_id!r} not found", field="queue_id")
    return row


def queue_items(session: Session, queue_id: str) -> list[ReviewQueueItem]:
    query = select(ReviewQueueItem).where(ReviewQueueItem.queue_id == queue_id)
    return list(session.scalars(query.order_by(ReviewQueueItem.position)))


def reviewed_count(session: Session, queue_id: str) -> int:
    """The queue's items with at least one verdict (by anyone, from anywhere)."""
    reviewed = select(ReviewVerdict.label_id).where(
        ReviewVerdict.label_id == ReviewQueueItem.label_id
    )
    query = select(func.count()).where(ReviewQueueItem.queue_id == queue_id, reviewed.exists())
    return int(session.scalar(query) or 0)


def items_page(
    session: Session, queue_id: str, cursor: str | None, limit: int
) -> tuple[list[ReviewQueueItem], str | None]:
    query = select(ReviewQueueItem).where(ReviewQueueItem.queue_id == queue_id)
    return id_page(session, query, ReviewQueueItem.position, cursor, limit, before_first=-1)


def labels(session: Session, label_ids: list[int]) -> dict[int, Label]:
    if not label_ids:
        return {}
    return {row.id: row for row in session.scalars(select(Label).where(Label.id.in_(label_ids)))}


def verdict_counts(session: Session, label_ids: list[int]) -> dict[int, int]:
    if not label_ids:
        return {}
    query = (
        select(ReviewVerdict.label_id, func.count())
        .where(ReviewVerdict.label_id.in_(label_ids))
        .group_by(ReviewVerdict.label_id)
    )
    return {label_id: int(n) for label_id, n in session.execute(query)}


def verdicts_of(
    session: Session, api_key_id: str, reviewer: str, label_ids: list[int]
) -> dict[int, ReviewVerdict]:
    if not label_ids:
        return {}
    query = select(ReviewVerdict).where(
        ReviewVerdict.label_id.in_(label_ids),
        ReviewVerdict.api_key_id == api_key_id,
        ReviewVerdict.reviewer == reviewer,
    )
    return {row.label_id: row for row in session.scalars(query)}


def principles(
    session: Session, version_ids: set[str], *, comparison: bool
) -> dict[str, dict[str, dict[str, Any]]]:
    """Constitution version id -> principle id -> the principle as written, from the set
    the job drew from (a critique and a comparison principle may share an id)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if not version_ids:
        return out
    group = "comparison_principles" if comparison else "critique_principles"
    query = select(ConstitutionVersion).where(ConstitutionVersion.id.in_(sorted(version_ids)))
    for version in session.scalars(query):
        content = version.content or {}
        out[version.id] = {
            str(p.get("id")): dict(p) for p in content.get(group) or () if isinstance(p, dict)
        }
    return out


def ai_label(label: Label) -> dict[str, Any]:
    """What the AI said, as the reviewer sees it."""
    if label.p_a is not None:
        return {
            "choice": agreement.ai_choice(label.p_a),
            "p_a": label.p_a,
            "confidence": agreement.ai_confidence(label.p_a),
            "p_a_forward": label.p_a_forward,
            "p_a_swapped": label.p_a_swapped,
            "swap_disagreement": label.swap_disagreement,
            "reasoning": label.reasoning,
        }
    return {"satisfies": True, "revision": label.completion}


def item_views(
    session: Session,
    api_key_id: str,
    reviewer: str,
    rows: list[ReviewQueueItem],
    *,
    comparison: bool,
) -> list[dict[str, Any]]:
    """What a reviewer is shown for each queue item (``mine``: their verdict or None)."""
    ids = [r.label_id for r in rows]
    found = labels(session, ids)
    mine = verdicts_of(session, api_key_id, reviewer, ids)
    counts = verdict_counts(session, ids)
    versions = {label.constitution_version_id for label in found.values()}
    texts = principles(session, versions, comparison=comparison)
    out = []
    for row in rows:
        label = found[row.label_id]
        known = texts.get(label.constitution_version_id, {})
        out.append(
            {
                "position": row.position,
                "label_id": label.id,
                "stratum": row.stratum,
                "kind": "comparison" if comparison else "revision",
                "conversation": label.conversation,
                "principle_ids": label.principle_ids,
                "principles": [known.get(p, {"id": p}) for p in label.principle_ids],
                "response_a": label.response_a,
                "response_b": label.response_b,
                "response": label.response,
                "rounds": label.rounds,
                "completion": label.completion,
                "ai_label": ai_label(label),
                "reviewed_by_me": label.id in mine,
                "mine": mine.get(label.id),
                "verdicts": counts.get(label.id, 0),
            }
        )
    return out


# --------------------------------------------------------------------------- verdicts


def _fields(comparison: bool, choice: str | None, satisfies: bool | None, where: str) -> None:
    if comparison and choice is None:
        raise Invalid("a comparison label takes 'choice' (A, B or tie)", field=f"{where}choice")
    if not comparison and satisfies is None:
        raise Invalid(
            "a revision label takes 'satisfies' (true or false)", field=f"{where}satisfies"
        )


def _snapshot(row: ReviewVerdict) -> dict[str, Any]:
    return {
        "choice": row.choice,
        "satisfies": row.satisfies,
        "note": row.note,
        "source": row.source,
        "at": row.updated_at.isoformat(),
    }


def _upsert(
    session: Session,
    label: Label,
    identity: tuple[str, str, str],
    values: dict[str, Any],
    *,
    queue_id: str | None,
    source: str,
    at: Any = None,
) -> tuple[ReviewVerdict, str]:
    """Create or replace the reviewer's verdict; ``created``, ``updated`` or ``unchanged``."""
    api_key_id, key_prefix, reviewer = identity
    agrees = agreement.agrees(p_a=label.p_a, choice=values["choice"], satisfies=values["satisfies"])
    now = at or utcnow()
    existing = verdicts_of(session, api_key_id, reviewer, [label.id]).get(label.id)
    if existing is None:
        row = ReviewVerdict(
            project_id=label.project_id,
            job_id=label.job_id,
            label_id=label.id,
            queue_id=queue_id,
            api_key_id=api_key_id,
            key_prefix=key_prefix,
            reviewer=reviewer,
            agrees=agrees,
            source=source,
            revision=1,
            history=[],
            created_at=now,
            updated_at=now,
            **values,
        )
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
            return row, "created"
        except IntegrityError:  # the same reviewer, at the same moment: replace theirs
            existing = verdicts_of(session, api_key_id, reviewer, [label.id])[label.id]
    if all(getattr(existing, k) == v for k, v in values.items()):
        return existing, "unchanged"
    existing.history = [*existing.history, _snapshot(existing)]
    for name, value in values.items():
        setattr(existing, name, value)
    existing.agrees = agrees
    existing.source = source
    existing.revision += 1
    existing.updated_at = utcnow()
    existing.queue_id = queue_id or existing.queue_id
    session.flush()
    return existing, "updated"


def give_verdict(
    session: Session, key: ApiKey, queue_id: str, label_id: int, spec: VerdictCreate
) -> tuple[ReviewVerdict, bool]:
    """The reviewer's verdict on one queued label, and whether it replaced theirs."""
    found = queue(session, key.project_id, queue_id, lock=True)
    item = session.scalar(
        select(ReviewQueueItem).where(
            ReviewQueueItem.queue_id == found.id, ReviewQueueItem.label_id == label_id
        )
    )
    if item is None:
        raise NotFound(f"label {label_id} is not in review queue {queue_id!r}", field="label_id")
    label = session.get_one(Label, label_id)
    comparison = is_comparison(session.get_one(Job, found.job_id).type)
    _fields(comparison, spec.choice, spec.satisfies, "body.")
    values = {"choice": spec.choice, "satisfies": spec.satisfies, "note": spec.note}
    row, outcome = _upsert(
        session, label, (key.id, key.prefix, spec.reviewer), values, queue_id=found.id, source="api"
    )
    _check_targets(session, key.project_id, [found])
    return row, outcome == "updated"


def _check_targets(session: Session, project_id: str, queues: list[ReviewQueue]) -> None:
    """Mark (once) and announce each queue whose items now all have a verdict."""
    for found in queues:
        if found.target_reached_at is not None:
            continue
        reviewed = reviewed_count(session, found.id)
        if reviewed < found.size:
            continue
        found.target_reached_at = utcnow()
        session.flush()
        webhook_events.emit(
            session,
            project_id,
            TARGET_REACHED,
            {
                "queue_id": found.id,
                "job_id": found.job_id,
                "size": found.size,
                "reviewed": reviewed,
                "strategy": found.strategy,
                "by": found.by,
            },
        )


# --------------------------------------------------------------------------- agreement


def _judgements(
    session: Session, project_id: str, job_id: str | None, model: str | None
) -> tuple[list[agreement.Judgement], int]:
    query = (
        select(ReviewVerdict, Label.principle_ids, Label.model, Label.p_a)
        .join(Label, Label.id == ReviewVerdict.label_id)
        .where(ReviewVerdict.project_id == project_id)
        .order_by(ReviewVerdict.id)
    )
    if job_id is not None:
        query = query.where(ReviewVerdict.job_id == job_id)
    if model is not None:
        query = query.where(Label.model == model)
    out = []
    for verdict, principle_ids, label_model, p_a in session.execute(query):
        out.append(
            agreement.Judgement(
                label_id=verdict.label_id,
                reviewer=f"{verdict.api_key_id}/{verdict.reviewer}",
                answer=agreement.answer(choice=verdict.choice, satisfies=verdict.satisfies),
                agrees=verdict.agrees,
                principle="+".join(principle_ids or ()) or "(none)",
                model=label_model,
                confidence=None if p_a is None else agreement.ai_confidence(p_a),
            )
        )
    return out, len(out)


def agreement_report(
    session: Session, project_id: str, *, job_id: str | None = None, model: str | None = None
) -> tuple[agreement.Report, int]:
    """The report over the project's verdicts (of one job, of one model's labels)."""
    judgements, n = _judgements(session, project_id, job_id, model)
    return agreement.report(judgements), n


# --------------------------------------------------------------------------- export, import


def export_rows(session: Session, project_id: str, job_id: str) -> list[dict[str, Any]]:
    """One row per verdict of the job, oldest first, with what was reviewed."""
    found = job(session, project_id, job_id)
    comparison = is_comparison(found.type)
    query = (
        select(ReviewVerdict, Label)
        .join(Label, Label.id == ReviewVerdict.label_id)
        .where(ReviewVerdict.job_id == found.id)
        .order_by(ReviewVerdict.id)
    )
    out = []
    for verdict, label in session.execute(query):
        responses = (
            {"response_a": label.response_a, "response_b": label.response_b}
            if comparison
            else {
                "response": label.response,
                "rounds": label.rounds,
                "completion": label.completion,
            }
        )
        out.append(
            {
                "label_id": label.id,
                "job_id": found.id,
                "kind": "comparison" if comparison else "revision",
                "prompt": label.conversation,
                **responses,
                "principle_ids": label.principle_ids,
                "model": label.model,
                "ai_label": ai_label(label),
                "verdict": {
                    "choice": verdict.choice,
                    "satisfies": verdict.satisfies,
                    "note": verdict.note,
                },
                "agrees": verdict.agrees,
                "reviewer": {
                    "key_id": verdict.api_key_id,
                    "key_prefix": verdict.key_prefix,
                    "name": verdict.reviewer,
                },
                "queue_id": verdict.queue_id,
                "revision": verdict.revision,
                "created_at": verdict.created_at.isoformat(),
                "updated_at": verdict.updated_at.isoformat(),
            }
        )
    return out


def import_rows(
    session: Session, project_id: str, job_id: str, lines: list[tuple[int, ImportLine]]
) -> dict[str, int]:
    """Store every line's verdict, or none: each line is checked against the job first.

    Idempotent on (label, reviewer): a line equal to the stored verdict changes
    nothing; a different one replaces it (keeping the old one in its history).
    """
    found = job(session, project_id, job_id)
    _reviewable(found)
    comparison = is_comparison(found.type)
    by_id = labels(session, sorted({line.label_id for _, line in lines}))
    seen: dict[tuple[int, str, str], int] = {}
    queue_ids = {line.queue_id for _, line in lines if line.queue_id}
    queues = {
        q.id: q
        for q in session.scalars(
            select(ReviewQueue).where(
                ReviewQueue.id.in_(sorted(queue_ids)), ReviewQueue.job_id == found.id
            )
        )
    }
    for number, line in lines:
        label = by_id.get(line.label_id)
        if label is None or label.job_id != found.id or label.project_id != project_id:
            raise Invalid(
                f"line {number}: label {line.label_id} is not a label of job {job_id!r}",
                field=f"line {number}.label_id",
            )
        if not (label.p_a is not None if comparison else label.completion is not None):
            raise Invalid(
                f"line {number}: label {line.label_id} has no AI verdict to review",
                field=f"line {number}.label_id",
            )
        _fields(comparison, line.verdict.choice, line.verdict.satisfies, f"line {number}.verdict.")
        identity = (line.label_id, line.reviewer.key_id, line.reviewer.name)
        if identity in seen:
            raise Invalid(
                f"line {number}: the same reviewer's verdict on label {line.label_id} is "
                f"also on line {seen[identity]}",
                field=f"line {number}.reviewer",
            )
        seen[identity] = number
        if line.queue_id and line.queue_id not in queues:
            raise Invalid(
                f"line {number}: review queue {line.queue_id!r} is not a queue of this job",
                field=f"line {number}.queue_id",
            )
    open_queues = list(
        session.scalars(
            select(ReviewQueue)
            .where(ReviewQueue.job_id == found.id, ReviewQueue.target_reached_at.is_(None))
            .order_by(ReviewQueue.id)
            .with_for_update()
        )
    )
    outcomes: Counter[str] = Counter()
    for _, line in lines:
        values = {
            "choice": line.verdict.choice,
            "satisfies": line.verdict.satisfies,
            "note": line.verdict.note,
        }
        reviewer = (line.reviewer.key_id, line.reviewer.key_prefix, line.reviewer.name)
        _, outcome = _upsert(
            session,
            by_id[line.label_id],
            reviewer,
            values,
            queue_id=line.queue_id,
            source="import",
            at=None if line.created_at is None else as_utc(line.created_at),
        )
        outcomes[outcome] += 1
    _check_targets(session, project_id, open_queues)
    return {
        "lines": len(lines),
        "created": outcomes["created"],
        "updated": outcomes["updated"],
        "unchanged": outcomes["unchanged"],
    }


# --------------------------------------------------------------------------- datasets


REVIEW_FILTERS = ("reviewed", "agreed", "human_verdicts")


def label_condition(project_id: str, option: str, kind: str) -> ColumnElement[bool]:
    """The labels a dataset's ``review`` filter keeps, as a condition on ``labels``.

    ``reviewed``: at least one verdict. ``agreed``: most of its reviewers (strictly
    more than half) agree with the AI label. ``human_verdicts``: the reviewers'
    majority gives a decisive verdict (A or B for a comparison, ``satisfies`` for a
    revision), which :func:`human_rows` then puts in place of the AI's.
    """
    verdicts = select(ReviewVerdict.label_id).where(ReviewVerdict.project_id == project_id)
    n = func.count()
    if option == "reviewed":
        chosen = verdicts
    elif option == "agreed":
        yes = func.sum(case((ReviewVerdict.agrees.is_(True), 1), else_=0))
        chosen = verdicts.group_by(ReviewVerdict.label_id).having(yes * 2 > n)
    elif option == "human_verdicts":
        grouped = verdicts.group_by(ReviewVerdict.label_id)
        if kind == "preference":
            a = func.sum(case((ReviewVerdict.choice == "A", 1), else_=0))
            b = func.sum(case((ReviewVerdict.choice == "B", 1), else_=0))
            chosen = grouped.having((a * 2 > n) | (b * 2 > n))
        else:
            yes = func.sum(case((ReviewVerdict.satisfies.is_(True), 1), else_=0))
            chosen = grouped.having(yes * 2 > n)
    else:
        raise Invalid(f"unknown review filter {option!r}", field="filter.review")
    return Label.id.in_(chosen)


def human_choices(session: Session, label_ids: list[int]) -> dict[int, str]:
    """The majority human choice (A or B) of each comparison label that has one."""
    votes: dict[int, Counter[str]] = {}
    if label_ids:
        query = select(ReviewVerdict.label_id, ReviewVerdict.choice).where(
            ReviewVerdict.label_id.in_(label_ids)
        )
        for label_id, choice in session.execute(query):
            votes.setdefault(label_id, Counter())[choice or ""] += 1
    out = {}
    for label_id, counter in votes.items():
        total = sum(counter.values())
        for side in ("A", "B"):
            if counter[side] * 2 > total:
                out[label_id] = side
    return out


def apply_human_choices(session: Session, version_id: str, after: int, upper: int) -> int:
    """Put the humans' choice in place of the AI's in a version's rows over labels
    ``after < id <= upper``: chosen is the side the reviewers' majority picked, with
    probability 1.0 (a hard, human preference). The row keeps its ``label_id``. The
    number of rows set (fewer than the batch's when verdicts changed meanwhile)."""
    query = (
        select(DatasetRow, Label.conversation, Label.response_a, Label.response_b)
        .join(Label, Label.id == DatasetRow.label_id)
        .where(DatasetRow.version_id == version_id, Label.id > after, Label.id <= upper)
    )
    fetched = list(session.execute(query))
    choices = human_choices(session, [row.label_id for row, *_ in fetched if row.label_id])
    done = 0
    for row, conversation, response_a, response_b in fetched:
        side = choices.get(row.label_id or 0)
        if side is None:  # the filter keeps only labels with a decisive human choice
            continue
        done += 1
        chosen, rejected = (response_a, response_b) if side == "A" else (response_b, response_a)
        row.row = {
            "prompt": conversation,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "chosen_probability": 1.0,
        }
    session.flush()
    return done


def job_queues(session: Session, job_id: str) -> list[tuple[ReviewQueue, int]]:
    """The job's review queues, newest first, each with its reviewed item count."""
    query = (
        select(ReviewQueue)
        .where(ReviewQueue.job_id == job_id)
        .order_by(ReviewQueue.created_at.desc(), ReviewQueue.id)
    )
    return [(q, reviewed_count(session, q.id)) for q in session.scalars(query)]
