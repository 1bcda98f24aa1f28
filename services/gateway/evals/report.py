"""An evaluation's report, from what the database holds: the gold answers, and each
job's labels (and abstentions) item by item. The numbers are the pure functions of
:mod:`charter.core.judge_eval` and :mod:`charter.core.injection` over those rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from itertools import combinations
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from charter.core import eval_plans, injection, judge_eval
from charter.core.jobs import ItemState, JobStatus
from charter.db.models import EvalRun, GoldItem, GoldSet, Label, Prompt, WorkItem
from services.gateway.evals import service
from services.gateway.jobs import service as jobs


@dataclass(frozen=True)
class Gold:
    position: int
    answer: str
    p_gold: float | None
    category: str | None
    len_a: int
    len_b: int


@dataclass(frozen=True)
class Scored:
    """One item of one job: its label's values, or abstained (all None)."""

    position: int
    """Its row in the job's batch: the gold position, or the variant's position."""
    p_a: float | None
    p_a_forward: float | None
    p_a_swapped: float | None
    principle_ids: tuple[str, ...]


def _gold(session: Session, gold: GoldSet) -> dict[int, Gold]:
    query = (
        select(
            GoldItem.position,
            GoldItem.answer,
            GoldItem.p_gold,
            GoldItem.category,
            func.length(Prompt.response_a),
            func.length(Prompt.response_b),
        )
        .join(Prompt, Prompt.id == GoldItem.prompt_id)
        .where(GoldItem.gold_set_id == gold.id)
    )
    return {row[0]: Gold(*row) for row in session.execute(query)}


def _scored(session: Session, job_id: str) -> list[Scored]:
    """Every finished item of the job that has a verdict: its label, or its abstention."""
    query = (
        select(
            Prompt.position,
            WorkItem.status,
            Label.p_a,
            Label.p_a_forward,
            Label.p_a_swapped,
            Label.principle_ids,
        )
        .join(Prompt, Prompt.id == WorkItem.prompt_id)
        .outerjoin(Label, Label.work_item_id == WorkItem.id)
        .where(
            WorkItem.job_id == job_id,
            WorkItem.status.in_([ItemState.DONE.value, ItemState.ABSTAINED.value]),
        )
    )
    out = []
    for position, state, p_a, forward, swapped, principles in session.execute(query):
        if state == ItemState.ABSTAINED:
            out.append(Scored(position, None, None, None, ()))
        elif p_a is not None:
            out.append(Scored(position, p_a, forward, swapped, tuple(principles or ())))
    return out


def verdicts(gold: dict[int, Gold], scored: Iterable[Scored]) -> list[judge_eval.GoldVerdict]:
    return [
        judge_eval.GoldVerdict(
            position=s.position,
            answer=g.answer,  # type: ignore[arg-type]
            p_gold=g.p_gold,
            category=g.category,
            p_a=s.p_a,
            p_a_forward=s.p_a_forward,
            p_a_swapped=s.p_a_swapped,
            abstained=s.p_a is None,
            principle_ids=s.principle_ids,
            len_a=g.len_a,
            len_b=g.len_b,
        )
        for s in sorted(scored, key=lambda s: s.position)
        if (g := gold.get(s.position)) is not None
    ]


DEFENCES = {
    "all": ("", "p_a"),
    "no_swap": ("", "p_a_forward"),
    "no_neutralise": ("-undefended", "p_a"),
    "none": ("-undefended", "p_a_forward"),
}
"""Each combination of the two defences: which jobs, and which of their values.

Swap off is the forward order of the same jobs (its P(A) before any chain-of-thought
clamp): without chain of thought scoring is deterministic, so it is exactly what a job
with ``swap: false`` would have labelled."""


def _attack_rows(
    gold: dict[int, Gold],
    clean: Sequence[Scored],
    attacked: Sequence[Scored],
    attacks: Sequence[injection.Attack],
    value: str,
) -> list[tuple[str, float, float, str]]:
    """(attack id, clean p, attacked p, answer) for each variant both jobs answered."""
    by_gold = {s.position: getattr(s, value) for s in clean}
    rows = []
    for s in attacked:
        position, attack = eval_plans.variant_of(s.position, attacks)
        before, after = by_gold.get(position), getattr(s, value)
        if before is not None and after is not None and position in gold:
            rows.append((attack.id, before, after, gold[position].answer))
    return rows


def _flips(stats: injection.FlipStats) -> dict[str, Any]:
    return asdict(stats)


def _injection(
    run: EvalRun,
    gold: dict[int, Gold],
    scored: dict[tuple[int, str], list[Scored]],
    configs: Sequence[dict[str, Any]],
) -> dict[str, Any] | None:
    if run.injection is None:
        return None
    attacks = [injection.get(a) for a in run.injection["attacks"]]
    out: dict[str, Any] = {}
    for index, config in enumerate(configs):
        per_defence: dict[str, Any] = {}
        for defence, (suffix, value) in DEFENCES.items():
            if value == "p_a" and not config["swap"]:
                continue  # without swap there is no swap to turn off: "no_swap" is the job
            clean = scored.get((index, f"clean{suffix}"))
            attacked = scored.get((index, f"injected{suffix}"))
            if clean is None or attacked is None:
                continue
            rows = _attack_rows(gold, clean, attacked, attacks, value)
            family = {a.id: a.family for a in attacks}
            attack_rows = [r for r in rows if family[r[0]] in injection.ATTACK_FAMILIES]
            control_rows = [r for r in rows if family[r[0]] not in injection.ATTACK_FAMILIES]
            per_defence[defence] = {
                "overall": _flips(injection.flip_stats(r[1:] for r in attack_rows)),
                "control": _flips(injection.flip_stats(r[1:] for r in control_rows)),
                "by_family": {k: _flips(v) for k, v in injection.by_family(rows, attacks).items()},
                "by_attack": {k: _flips(v) for k, v in injection.by_attack(rows, attacks).items()},
            }
        out[config["name"]] = per_defence
    return {**run.injection, "configs": out}


def build(session: Session, run: EvalRun) -> dict[str, Any]:
    """The whole report (the fields of ``EvalReportOut``)."""
    gold_set = session.get(GoldSet, run.gold_set_id)
    assert gold_set is not None
    gold = _gold(session, gold_set)
    jobs_of_run = service.run_jobs(session, run)
    counts = jobs.counts(session, [r.job.id for r in jobs_of_run])
    scored: dict[tuple[int, str], list[Scored]] = {
        (r.config_index, r.variant): _scored(session, r.job.id) for r in jobs_of_run
    }
    configs: dict[str, dict[str, Any]] = {}
    clean: dict[str, list[judge_eval.GoldVerdict]] = {}
    for index, config in enumerate(run.configs):
        name = config["name"]
        clean[name] = verdicts(gold, scored.get((index, "clean"), []))
        configs[name] = {
            "config": config,
            "jobs": {
                r.variant: {"job_id": r.job.id, "counts": counts[r.job.id]}
                for r in jobs_of_run
                if r.config_index == index
            },
            "metrics": judge_eval.evaluate(clean[name]).to_dict(),
        }
    comparisons = [
        {"first": a, "second": b, **judge_eval.paired_difference(clean[a], clean[b]).to_dict()}
        for a, b in combinations(list(clean), 2)
    ]
    run_status = service.status(jobs_of_run, counts)
    return {
        "id": run.id,
        "name": run.name,
        "gold_set": f"{gold_set.name}@{gold_set.version}",
        "status": run_status,
        "complete": run_status == JobStatus.COMPLETED,
        "configs": configs,
        "comparisons": comparisons,
        "injection": _injection(run, gold, scored, run.configs),
    }
