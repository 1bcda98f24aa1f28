from __future__ import annotations

from fastapi import APIRouter

from services.gateway.deps import ReadKey, SessionDep
from services.gateway.unit_of_work import UnitOfWorkRoute
from services.gateway.workers import service
from services.gateway.workers.schemas import WorkerOut

router = APIRouter(prefix="/v1/workers", tags=["workers"], route_class=UnitOfWorkRoute)


@router.get(
    "",
    response_model=list[WorkerOut],
    description="The shared worker fleet, so a project can see which models are served. "
    "Identity (id, host, pid, engine, models) is fleet-wide and already recorded on every "
    "label; `items_done` counts this project's labels only, never other projects' work.",
)
def list_workers(session: SessionDep, key: ReadKey) -> list[WorkerOut]:
    return [
        WorkerOut.model_validate(worker).model_copy(update={"items_done": done})
        for worker, done in service.fleet(session, key.project_id)
    ]
