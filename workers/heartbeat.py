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
    """Beat every ``interval`` seconds in a daemon thread; set the returned event to stop."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                beat(sessions, worker_id)
            except Exception as exc:  # a database blip must not kill the worker
                log.warning("heartbeat failed: %s", exc)

    threading.Thread(target=loop, name="heartbeat", daemon=True).start()
    return stop
