"""Worker heartbeats: a row in ``workers`` for the API and a file for container health.

Each beat also writes the process's engine counters (``workers.engine_stats``) and the
chunk it is running, which the gateway's ``/metrics`` exports.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from charter.core.jobs import RUN_MODELS, serves_any_run
from charter.db.models import Worker, utcnow
from charter.periodic import Periodic
from workers.engine_stats import EngineStats

log = logging.getLogger(__name__)
ALIVE_FILE = Path("/tmp/charter-worker-alive")


def announced(worker_models: Iterable[str]) -> list[str]:
    """The models a worker's row announces: those it lists, and ``run:*`` when it serves
    the runs' shared queue (any ``run:<id>`` listed takes it), which it loads on demand."""
    models = set(worker_models)
    if serves_any_run(models):
        models.add(RUN_MODELS)
    return sorted(models)


def register(
    sessions: sessionmaker[Session], worker_id: str, engine: str, models: list[str]
) -> None:
    """Insert or reset the worker's row: its counters count from this start."""
    fresh = EngineStats().snapshot()
    with sessions() as session, session.begin():
        row = session.get(Worker, worker_id)
        now = utcnow()
        if row is None:
            session.add(
                Worker(
                    id=worker_id,
                    hostname=socket.gethostname(),
                    pid=os.getpid(),
                    engine=engine,
                    models=models,
                    started_at=now,
                    last_seen=now,
                    items_done=0,
                    **fresh,
                )
            )
        else:
            row.pid, row.engine, row.models, row.started_at, row.last_seen = (
                os.getpid(),
                engine,
                models,
                now,
                now,
            )
            for name, value in fresh.items():
                setattr(row, name, value)


def beat(sessions: sessionmaker[Session], worker_id: str, stats: EngineStats | None = None) -> None:
    values = {"last_seen": utcnow(), **(stats.snapshot() if stats is not None else {})}
    with sessions() as session, session.begin():
        session.execute(update(Worker).where(Worker.id == worker_id).values(**values))
    ALIVE_FILE.touch()


def start(
    sessions: sessionmaker[Session],
    worker_id: str,
    interval: float,
    stats: EngineStats | None = None,
) -> Periodic:
    """Beat every ``interval`` seconds on a daemon thread; ``stop()`` the result to stop.

    A beat only records ``last_seen`` and the engine counters (``stats``) for
    ``/v1/workers`` and ``/metrics``: no lease depends on it (the runner's lease keeper
    extends a chunk's lease itself). So while the database is down the beats fail and
    are simply tried again at the next interval; the counters are cumulative, so the
    next beat that succeeds writes everything counted meanwhile.
    """
    return Periodic(
        "heartbeat", interval, lambda: beat(sessions, worker_id, stats), logger=log
    ).start()
