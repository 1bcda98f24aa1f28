"""Worker heartbeats: a row in ``workers`` for the API and a file for container health."""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from charter.db.models import Worker, utcnow

log = logging.getLogger(__name__)
ALIVE_FILE = Path("/tmp/charter-worker-alive")


def register(
    sessions: sessionmaker[Session], worker_id: str, engine: str, models: list[str]
) -> None:
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


def beat(sessions: sessionmaker[Session], worker_id: str) -> None:
    with sessions() as session, session.begin():
        session.execute(update(Worker).where(Worker.id == worker_id).values(last_seen=utcnow()))
    ALIVE_FILE.touch()


def start(sessions: sessionmaker[Session], worker_id: str, interval: float) -> threading.Event:
    """Beat every ``interval`` seconds in a daemon thread; set the returned event to stop.

    A beat only records ``last_seen`` for ``/v1/workers``: no lease depends on it (the
    runner's lease keeper extends a chunk's lease itself). So while the database is
    down the beats fail and are simply tried again at the next interval; the outage is
    logged once when it starts and once when it ends, not at every beat.
    """
    stop = threading.Event()

    def loop() -> None:
        failed = 0
        while not stop.wait(interval):
            try:
                beat(sessions, worker_id)
            except Exception as exc:  # a database blip must not kill the worker
                failed += 1
                if failed == 1:
                    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                    log.warning("heartbeat failed (%s); beating on every %g s", reason, interval)
            else:
                if failed:
                    log.warning("heartbeat back after %d failed beats", failed)
                failed = 0

    threading.Thread(target=loop, name="heartbeat", daemon=True).start()
    return stop
