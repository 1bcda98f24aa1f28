"""``/v1/stats``: the numbers behind the operator dashboard, read-only, per project."""

from __future__ import annotations

from fastapi import APIRouter, Query

from services.gateway.deps import ReadKey, SessionDep, SettingsDep
from services.gateway.stats import service
from services.gateway.stats.schemas import JobStats, ModelStats, Overview
from services.gateway.unit_of_work import UnitOfWorkRoute

router = APIRouter(prefix="/v1/stats", tags=["stats"], route_class=UnitOfWorkRoute)


@router.get(
    "/overview",
    response_model=Overview,
    description="Queues, live workers, labels per minute, failure and abstention rates, "
    "the outbox backlog and what is stuck, over the last `hours`.",
)
def overview(
    session: SessionDep,
    settings: SettingsDep,
    key: ReadKey,
    hours: int = Query(default=6, ge=1, le=168, description="Window of the per-minute chart."),
) -> Overview:
    return service.overview(
        session, key.project_id, hours=hours, live_seconds=service.live_window(settings)
    )


@router.get(
    "/jobs/{job_id}",
    response_model=JobStats,
    description="A job's progress, throughput, ETA, failures and abstentions by reason, "
    "and its judge (compare, rl_cai) or critique (sl_cai, critique, revise) statistics.",
)
def job_stats(
    job_id: str,
    session: SessionDep,
    key: ReadKey,
    chains: int = Query(default=5, ge=0, le=50, description="Critique chains to sample."),
) -> JobStats:
    return service.job_stats(session, key.project_id, job_id, chains=chains)


@router.get(
    "/models",
    response_model=list[ModelStats],
    description="Per judge (model, template version): position and length bias, swap "
    "disagreement and the soft-label histogram across this project's A/B labels.",
)
def model_stats(session: SessionDep, key: ReadKey) -> list[ModelStats]:
    return service.model_stats(session, key.project_id)
