"""A policy evaluation's report, from what the database holds: each policy's
generations and each judge's labels on the pairs batch, row by row. The scores are
:func:`charter.core.elo.ratings` over those rows (grouped by prompt), so the report
always says what the labels say, partial while the judges still run.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from charter.core import elo
from charter.core import policy_eval_plans as plans
from charter.core.jobs import ItemState
from charter.db.models import Label, PolicyEval, Prompt, WorkItem
from services.gateway.jobs import service as jobs
from services.gateway.policy_evals import service

LEVEL = 0.95


def _scored(session: Session, job_id: str) -> tuple[dict[int, float], int]:
    """Pairs-batch position -> the label's P(A), and how many items abstained."""
    query = (
        select(Prompt.position, WorkItem.status, Label.p_a)
        .join(Prompt, Prompt.id == WorkItem.prompt_id)
        .outerjoin(Label, Label.work_item_id == WorkItem.id)
        .where(
            WorkItem.job_id == job_id,
            WorkItem.status.in_([ItemState.DONE.value, ItemState.ABSTAINED.value]),
        )
    )
    scored, abstained = {}, 0
    for position, state, p_a in session.execute(query):
        if state == ItemState.ABSTAINED:
            abstained += 1
        elif p_a is not None:
            scored[position] = p_a
    return scored, abstained


def judge_report(
    run: PolicyEval,
    config: dict[str, Any],
    job_id: str | None,
    counts: dict[str, int],
    scored: dict[int, float],
    abstained: int,
) -> dict[str, Any]:
    policies = [p["name"] for p in run.policies]
    slot_rows = [plans.Slot(*s) for s in run.slots or []]
    found = plans.comparisons(slot_rows, policies, scored)
    ratings: list[dict[str, Any]] = []
    error = None
    try:
        rated = elo.ratings(
            found, anchor=run.anchor, samples=run.bootstrap, level=LEVEL, seed=run.seed % 2**32
        )
    except elo.RatingError as exc:
        error = str(exc) if found else "no comparison scored yet"
    else:
        ratings = [asdict(r) for r in rated]
    return {
        "config": config,
        "job_id": job_id,
        "counts": counts,
        "scored": len(found),
        "abstained": abstained,
        "ratings": ratings,
        "head_to_head": [asdict(h) for h in plans.head_to_head(found, policies)],
        "rating_error": error,
    }


def build(session: Session, run: PolicyEval) -> dict[str, Any]:
    """The whole report (the fields of ``PolicyEvalReportOut``)."""
    rows = service.run_jobs(session, run)
    counts = jobs.counts(session, [r.job.id for r in rows])
    status = service.status(run, rows, counts)
    generations = {
        r.name: {"answered": _answered(counts[r.job.id]), "prompts": r.job.item_count}
        for r in rows
        if r.role == "generate"
    }
    compare = {r.index: r for r in rows if r.role == "compare"}
    judges = {}
    for index, config in enumerate(run.judges):
        row = compare.get(index)
        scored, abstained = _scored(session, row.job.id) if row else ({}, 0)
        judges[config["name"]] = judge_report(
            run,
            config,
            row.job.id if row else None,
            counts[row.job.id] if row else {},
            scored,
            abstained,
        )
    return {
        "id": run.id,
        "name": run.name,
        "stage": run.stage,
        "status": status,
        "complete": status == "completed",
        "anchor": run.anchor,
        "level": LEVEL,
        "bootstrap": run.bootstrap,
        "generations": generations,
        "judges": judges,
        "plot": run.plot,
    }


def _answered(counts: dict[str, int]) -> int:
    return counts.get(ItemState.DONE.value, 0)
