"""Everything on one machine with no servers: SQLite, a filesystem broker, the
gateway in a thread, real Celery worker processes and a sweeper thread.

Used by ``charter demo`` and by the end-to-end tests, so both exercise the same
processes a deployment runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from charter.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these settings."""
    env = {
        "CHARTER_ENV": settings.env,
        "CHARTER_DATA_DIR": str(settings.data_dir.resolve()),
        "CHARTER_MODELS_DIR": str(settings.models_dir),
        "CHARTER_SECRET_KEY": settings.secret_key,
        "CHARTER_WORKER_ENGINE": settings.worker_engine,
        "CHARTER_WORKER_MODELS": ",".join(settings.worker_models),
        "CHARTER_WORKER_MAX_BATCH": str(settings.worker_max_batch),
        **(
            {"CHARTER_WORKER_THREADS": str(settings.worker_threads)}
            if settings.worker_threads
            else {}
        ),
        "CHARTER_LEASE_SECONDS": str(settings.lease_seconds),
        "CHARTER_MAX_ATTEMPTS": str(settings.max_attempts),
        "CHARTER_FAULT_DELAY_SECONDS": str(settings.fault_delay_seconds),
        "CHARTER_FAULT_POISON_MODE": settings.fault_poison_mode,
        "CHARTER_WORKER_HEARTBEAT_SECONDS": str(settings.worker_heartbeat_seconds),
    }
    if settings.fault_poison:
        env["CHARTER_FAULT_POISON"] = settings.fault_poison
    if settings.database_url:
        env["CHARTER_DATABASE_URL"] = settings.database_url
    if settings.broker_url:
        env["CHARTER_BROKER_URL"] = settings.broker_url
    if settings.models:
        import json

        env["CHARTER_MODELS"] = json.dumps(settings.models)
    return env


def start_worker(
    settings: Settings, *, name: str, log: Path, concurrency: int = 1
) -> subprocess.Popen[bytes]:
    """A real Celery worker process (prefork pool) with these settings."""
    env = {**os.environ, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-c", str(concurrency), "-P", "prefork", "-n", f"{name}@%h", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    handle = log.open("ab")
    return subprocess.Popen(
        command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class GatewayThread:
    """uvicorn serving the gateway from a background thread."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        import uvicorn

        from services.gateway.app import create_app

        self.port = port or free_port()
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> GatewayThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@contextmanager
def sweeper_thread(settings: Settings) -> Iterator[None]:
    from charter.db.session import make_engine, session_factory
    from charter.queue import make_celery
    from workers.sweeper import run_forever

    stop = threading.Event()
    sessions = session_factory(make_engine(settings.effective_database_url))
    producer = make_celery(settings, name="charter-sweeper")
    thread = threading.Thread(
        target=run_forever, args=(sessions, producer, settings, stop), name="sweeper", daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
