"""The worker fleet as a project sees it: shared identities, its own work counted."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from charter.db.models import Label, Worker


def fleet(session: Session, project_id: str) -> list[tuple[Worker, int]]:
    """Every registered worker, most recently seen first, with this project's labels."""
    workers = list(session.scalars(select(Worker).order_by(Worker.last_seen.desc())))
    done = items_done_by_worker(session, project_id, [w.id for w in workers])
    return [(w, done.get(w.id, 0)) for w in workers]


def items_done_by_worker(
    session: Session, project_id: str, worker_ids: list[str]
) -> dict[str, int]:
    """This project's labels per worker (a fleet-wide count would show others' work)."""
    if not worker_ids:
        return {}
    return dict(
        session.execute(  # type: ignore[arg-type]
            select(Label.worker_id, func.count())
            .where(Label.project_id == project_id, Label.worker_id.in_(worker_ids))
            .group_by(Label.worker_id)
        ).all()
    )
