"""The worker's Celery app: ``celery -A workers.celery_app worker``.

Each worker process loads its engines once (after the fork), registers itself,
heartbeats, and consumes only the queues of the models it serves (with ``run:*``, or
any ``run:<id>``, the runs' shared queue, whose models it loads on demand). SIGTERM or
SIGINT stops it within ``worker_shutdown_seconds``, its chunk in flight given
back at once (workers/shutdown.py).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery.signals import (
    setup_logging,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutting_down,
)
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from charter import log_format
from charter.core.jobs import serves_any_run
from charter.db.session import end_sessions_of, is_postgres, make_engine, session_factory
from charter.outbox import publish_pending
from charter.queue import make_celery, worker_queues
from charter.settings import get_settings
from workers import heartbeat, leases, shutdown
from workers.engine_stats import EngineStats

log = logging.getLogger(__name__)
settings = get_settings()
app = make_celery(settings, name="charter-worker")
# Every run model shares one queue: taken once, whichever run:<id> or run:* named it.
app.conf.task_queues = worker_queues(settings.worker_models)
app.conf.imports = ["workers.tasks"]

_state: dict[str, Any] = {}
GIVE_BACK_LOCK_SECONDS = 5
"""The longest the give-back waits for a row lock: well inside the watchdog's kill."""


def worker_id(pid: int | None = None) -> str:
    """The lease owner of a pool process: ``host:pid``."""
    return f"{socket.gethostname()}:{pid or os.getpid()}"


def runner():  # type: ignore[no-untyped-def]
    """The process's ChunkRunner, built on first use (engines load once per process)."""
    if "runner" not in _state:
        from workers.engine_cache import RunModelCache
        from workers.engine_loader import build_engine, engine_config, load_engines, run_finder
        from workers.runner import ChunkRunner

        sessions = session_factory()
        config = engine_config(settings)  # once: every engine and label of the process
        engines = load_engines(settings, config, sessions)
        run_models = None
        if serves_any_run(settings.worker_models):  # it takes the runs' shared queue
            find = run_finder(settings, sessions)
            run_models = RunModelCache(
                lambda name: build_engine(settings, config, name, find),
                settings.worker_run_model_slots,
                pinned=engines,
            )
        stats = EngineStats()  # counted by the runner, written by each heartbeat
        models = heartbeat.announced(settings.worker_models)
        heartbeat.register(sessions, worker_id(), config.engine, models)
        _state["heartbeat"] = heartbeat.start(
            sessions, worker_id(), settings.worker_heartbeat_seconds, stats
        )
        _state["runner"] = ChunkRunner(
            sessions,
            engines,
            settings,
            worker_id(),
            republish=lambda job_id: publish_pending(sessions, app, job_id=job_id),
            stats=stats,
            run_models=run_models,
        )
        log.info(
            "worker %s serves %s with %s (engine config %s: %s)",
            worker_id(), models, config.engine, config.compute_hash(),
            config.model_dump(mode="json"),
        )  # fmt: skip
    return _state["runner"]


def give_back(pid: int, chunk: tuple[str, int] | None = None) -> int:
    """Release what pool process ``pid`` holds (it was interrupted, or killed) and
    publish it again; how many items it held.

    On connections of its own: the interruption may have come in the middle of a
    statement or a publish, leaving a pooled connection (and its pool) unusable, or a
    transaction open with the rows' locks: the process's own sessions still in one are
    ended first (``end_sessions_of``), and the wait for a lock is bounded all the same."""
    engine = make_engine(settings.effective_database_url, poolclass=NullPool)
    producer = make_celery(settings, name="charter-give-back")
    try:
        sessions = session_factory(engine)
        reason = f"given back at the shutdown of worker {worker_id(pid)}"
        with sessions() as session, session.begin():
            ended = end_sessions_of(session, pid)
        if ended:
            log.warning("ended %d open database sessions of process %s to give back", ended, pid)
        with sessions() as session, session.begin():
            if is_postgres(engine):  # bounded: the watchdog's backstop must find it done
                session.execute(text(f"SET LOCAL lock_timeout = '{GIVE_BACK_LOCK_SECONDS}s'"))
            released, jobs = leases.give_back(session, worker_id(pid), reason, chunk)
        for job_id in sorted(jobs):
            try:
                publish_pending(sessions, producer, job_id=job_id)
            except Exception as exc:  # left unpublished: the sweeper's next pass sends it
                log.warning("could not publish job %s again: %s", job_id, exc)
    finally:
        producer.close()
        engine.dispose()
    if released:
        log.warning("gave back %d items of %s at shutdown", released, worker_id(pid))
    return released


@setup_logging.connect
def _logging(loglevel: int | str | None = None, **_: object) -> None:
    # Connected, this replaces Celery's own set-up: Charter's lines, JSON in production.
    log_format.configure(settings.log_json, loglevel or logging.INFO)


# Pool processes ------------------------------------------------------------------


@worker_process_init.connect
def _load(**_: object) -> None:
    # The engine loads in the pool process, after the fork: never in the parent.
    from charter.db.session import default_engine

    default_engine().dispose(close=False)
    shutdown.dump_stacks_on_signal()
    shutdown.bound_result_wait(settings.worker_shutdown_seconds / 4)
    # Stopped while loading: the load is abandoned; the process exits with the pool.
    shutdown.run_interruptible(
        runner, lambda: log.info("stopping: pool process %s skips its engines", os.getpid())
    )
    shutdown.defer_when_idle()


@worker_process_shutdown.connect
def _stop(**_: object) -> None:
    beats = _state.get("heartbeat")
    if beats is not None:
        beats.stop(join=False)


# Main process --------------------------------------------------------------------


@worker_init.connect
def _remember(sender: Any, **_: object) -> None:
    _state["worker"] = sender  # the WorkController, for its pool's processes


def _billiard_pool() -> Any:
    return getattr(getattr(_state.get("worker"), "pool", None), "_pool", None)


def _pool_pids() -> list[int]:
    return [p.pid for p in list(getattr(_billiard_pool(), "_pool", None) or []) if p.pid]


@worker_shutting_down.connect
def _shutting_down(exitcode: int = 0, **_: object) -> None:
    # In the main process's signal handler, once per signal (Ctrl-C twice: twice).
    if "watchdog" not in _state:
        supervisor = getattr(_billiard_pool(), "_worker_handler", None)
        if supervisor is not None:
            # What billiard's Pool.close() does first, done before the pool processes
            # exit: none is replaced during the shutdown (workers/shutdown.py, 3.).
            supervisor.close()
        _state["watchdog"] = shutdown.Watchdog(
            _pool_pids, give_back, settings.worker_shutdown_seconds, exitcode or 0
        )
        _state["watchdog"].start()
