"""The worker's Celery app: ``celery -A workers.celery_app worker``.

Each worker process loads its engines once (after the fork), registers itself,
heartbeats, and consumes only the queues of the models it serves.
"""

from __future__ import annotations

import logging
import os
import socket

from celery.signals import worker_process_init, worker_process_shutdown

from charter.db.session import session_factory
from charter.dispatch import publish_pending
from charter.queue import make_celery, model_queue
from charter.settings import get_settings
from workers import heartbeat

log = logging.getLogger(__name__)
settings = get_settings()
app = make_celery(settings, name="charter-worker")
app.conf.task_queues = [model_queue(m) for m in settings.worker_models]
app.conf.imports = ["workers.tasks"]

_state: dict[str, object] = {}


def runner():  # type: ignore[no-untyped-def]
    """The process's ChunkRunner, built on first use (engines load once per process)."""
    if "runner" not in _state:
        from workers.engine_loader import load_engines
        from workers.runner import ChunkRunner

        sessions = session_factory()
        worker_id = f"{socket.gethostname()}:{os.getpid()}"
        engines = load_engines(settings)
        heartbeat.register(sessions, worker_id, settings.worker_engine, sorted(engines))
        _state["stop"] = heartbeat.start(sessions, worker_id, settings.worker_heartbeat_seconds)
        _state["runner"] = ChunkRunner(
            sessions,
            engines,
            settings,
            worker_id,
            republish=lambda job_id: publish_pending(sessions, app, job_id=job_id),
        )
        log.info("worker %s serves %s with %s", worker_id, sorted(engines), settings.worker_engine)
    return _state["runner"]


@worker_process_init.connect
def _load(**_: object) -> None:
    # The engine loads in the pool process, after the fork: never in the parent.
    from charter.db.session import default_engine

    default_engine().dispose(close=False)
    runner()


@worker_process_shutdown.connect
def _stop(**_: object) -> None:
    stop = _state.get("stop")
    if stop is not None:
        stop.set()  # type: ignore[attr-defined]
