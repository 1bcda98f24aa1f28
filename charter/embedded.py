"""Everything on one machine with no servers: SQLite, a filesystem broker, the
gateway in a thread, real Celery worker processes and a sweeper thread.

Used by ``charter demo`` and by the end-to-end tests, so both exercise the same
processes a deployment runs.
"""

from __future__ import annotations

import json
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
from typing import get_args

from charter.settings import Settings, get_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process exactly these settings.

    Every field is written, so none falls back to a different value in the
    parent's environment or a ``.env`` file; an unset optional text field is
    written empty, which the code reads as unset.
    """
    env: dict[str, str] = {}
    for name, info in type(settings).model_fields.items():
        value = getattr(settings, name)
        if name == "data_dir":
            value = settings.data_dir.resolve()
        if value is None:
            if str not in get_args(info.annotation):
                continue  # e.g. worker_threads: only a number can be written
            value = ""
        elif isinstance(value, list | tuple | dict):
            value = json.dumps(value)
        env[f"CHARTER_{name.upper()}"] = str(value)
    return env


def start_worker(
    settings: Settings, *, name: str, log: Path, concurrency: int = 1
) -> subprocess.Popen[bytes]:
    """A real Celery worker process (prefork pool) with these settings."""
    # The parent's own CHARTER_* variables must not override or add to ``settings``.
    inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHARTER_")}
    env = {**inherited, **settings_env(settings), "PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "-c", str(concurrency), "-P", "prefork", "-n", f"{name}@%h", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
    ]  # fmt: skip
    handle = log.open("ab")
    return subprocess.Popen(
        command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float | None = None) -> bool:
    """SIGTERM to the process group, as a service manager stops a worker: it exits
    within ``worker_shutdown_seconds``, its chunk given back (workers/shutdown.py).
    Killed if still there ``timeout`` seconds later (by default a few seconds past
    that bound); True when it stopped by itself."""
    if process.poll() is not None:
        return True
    if timeout is None:
        timeout = get_settings().worker_shutdown_seconds + 5.0
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return False


class GatewayThread:
    """uvicorn serving the gateway from a background thread."""

    def __init__(self, settings: Settings, port: int | None = None) -> None:
        import uvicorn

        from services.gateway.app import create_app

        self.port = port or free_port()
        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
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
        # Close its database connections: a test suite opens many gateways. (Broker
        # connections sit in kombu's pools, shared by every app with the same URL.)
        self.app.state.producer.close()
        self.app.state.engine.dispose()


@contextmanager
def sweeper_thread(settings: Settings) -> Iterator[None]:
    from charter.db.session import make_engine, session_factory
    from charter.queue import make_celery
    from workers.sweeper import run_forever

    stop = threading.Event()
    engine = make_engine(settings.effective_database_url)
    sessions = session_factory(engine)
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
        producer.close()
        engine.dispose()
