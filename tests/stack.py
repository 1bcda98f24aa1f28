"""The end-to-end stack shared by the worker and reliability tests.

A stack is the gateway (a uvicorn thread), the sweeper (a thread) and real Celery
worker processes (``charter worker``'s app and prefork pool) on one database and
broker, with helpers that submit over HTTP and count rows in the database.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text

from charter.client import CharterClient
from charter.db.models import Job, Label, WorkItem
from charter.db.session import session_factory
from charter.embedded import GatewayThread, start_worker, sweeper_thread
from charter.queue import queue_for
from charter.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
SECRET = "test-secret-for-end-to-end"
REDIS_URL = os.environ.get("CHARTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
DEAD_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1
MODELS_DIR = Path(os.environ.get("CHARTER_MODELS_DIR", "~/.cache/charter/models")).expanduser()

SCRIPTED_TIMEOUT = 180.0
REAL_MODEL_TIMEOUT = 900.0


def rows(n: int, marker: str = "", *, response: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"prompt": f"Question {i}{marker}: what is {i} plus {i}?"} for i in range(n)
    ]
    if response:
        for i, row in enumerate(out):
            row["response"] = f"It is {2 * i}."
    return out


def forget_queues(broker_url: str | None, models: list[str], workers: list[str]) -> None:
    """Delete what these models' queues and these workers left in Redis: messages,
    bindings (the model queues and the workers' remote-control queues), unacked copies."""
    if not broker_url:
        return
    import redis

    queues = {queue_for(m) for m in models}
    client = redis.Redis.from_url(broker_url)
    try:
        if queues:
            client.delete(*queues)
        for key in client.scan_iter("_kombu.binding*"):
            if client.type(key) != b"set":
                continue
            for member in client.smembers(key):
                queue = member.decode(errors="replace").rsplit("\x06\x16", 1)[-1]
                if queue in queues or queue.split("@", 1)[0] in workers:
                    client.srem(key, member)
        for tag, raw in client.hgetall("unacked").items():
            if any(f'"{q}"' in raw.decode(errors="replace") for q in queues):
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)
    finally:
        client.close()


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (read from /proc; no psutil needed)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def thread_stacks() -> str:
    """Where this process's sweeper and gateway threads are (for failure messages)."""
    import sys
    import threading
    import traceback

    frames = sys._current_frames()
    out = []
    for thread in threading.enumerate():
        if thread.name in ("sweeper", "gateway") and thread.ident in frames:
            stack = "".join(traceback.format_stack(frames[thread.ident])[-8:])
            out.append(f"--- thread {thread.name}\n{stack}")
    return "".join(out)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker's whole process group (main process and pool children)."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)


@dataclass
class Stack:
    """Gateway + sweeper + workers on one backend; every process is killed on exit."""

    settings: Settings
    key: str
    db: Engine
    log_dir: Path
    client: CharterClient = field(init=False)
    gateway: GatewayThread = field(init=False)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    exits: ExitStack = field(default_factory=ExitStack)
    _constitution: dict[str, Any] | None = None

    def open(self, *, gateway_settings: Settings | None = None, sweeper: bool = True) -> Stack:
        self.exits.callback(forget_queues, self.settings.broker_url, self.models, self.names)
        self.gateway = self.exits.enter_context(GatewayThread(gateway_settings or self.settings))
        if sweeper:
            self.start_sweeper()
        self.client = self.exits.enter_context(CharterClient(self.gateway.url, self.key))
        self.exits.callback(self.stop_workers)
        return self

    def close(self) -> None:
        self.exits.close()

    def start_sweeper(self) -> None:
        self.exits.enter_context(sweeper_thread(self.settings))

    def new_model(self, prefix: str = "scripted") -> str:
        """A model name of this test's own, hence a queue no other test consumes."""
        model = f"{prefix}-{secrets.token_hex(4)}"
        self.models.append(model)
        # Configure the gateway to serve it, as a deployment lists its models: jobs for a
        # model no configuration knows are refused (the worker may not be up yet).
        self.gateway.app.state.settings.worker_models.append(model)
        return model

    def worker_settings(self, models: list[str], **overrides: Any) -> Settings:
        return self.settings.model_copy(update={"worker_models": models, **overrides})

    def start_worker(
        self, models: list[str], *, concurrency: int = 1, **overrides: Any
    ) -> subprocess.Popen[bytes]:
        name = f"w{len(self.workers)}-{secrets.token_hex(3)}"
        self.names.append(name)
        log = self.log_dir / f"worker-{name}.log"
        settings = self.worker_settings(models, **overrides)
        process = start_worker(settings, name=name, log=log, concurrency=concurrency)
        self.workers.append(process)
        self.logs.append(log)
        return process

    def stop_workers(self) -> None:
        for process in self.workers:
            kill_group(process)

    def tails(self, lines: int = 40) -> str:
        out = []
        for log in self.logs:
            text_ = log.read_text(errors="replace") if log.exists() else "(no log)"
            out.append(
                f"----- {log.name} (last {lines} lines)\n" + "\n".join(text_.splitlines()[-lines:])
            )
        return "\n".join(out)

    # API helpers ---------------------------------------------------------------------

    def constitution(self) -> dict[str, Any]:
        if self._constitution is None:
            self._constitution = self.client.push_constitution(
                ROOT / "constitutions" / "default.yaml"
            )
        return self._constitution

    def submit(self, rows_: list[dict[str, Any]], model: str, **spec: Any) -> dict[str, Any]:
        batch = self.client.create_batch(rows_, name=spec.get("type", "batch"))
        spec.setdefault("type", "sl_cai")
        return self.client.submit_job(
            batch_id=batch["id"], constitution=self.constitution()["ref"], model=model, **spec
        )

    def wait(self, job_id: str, timeout: float = SCRIPTED_TIMEOUT) -> dict[str, Any]:
        """The job once it completed (by the API and in its row), or fail with the logs."""
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.client.job(job_id)
            if job["status"] in ("completed", "cancelled") and self.job_row_status(job_id) in (
                "completed",
                "cancelled",
            ):
                return job
            time.sleep(0.25)
        pytest.fail(
            f"job {job_id} not done after {timeout:.0f} s: status {job.get('status')}, "
            f"row {self.job_row_status(job_id)}, counts {job.get('counts')}\nitems:\n"
            + "\n".join(str(tuple(item)) for item in self.items(job_id))
            + f"\nbroker: {self.broker_state()}\n{thread_stacks()}\n{self.tails()}"
        )

    def broker_state(self) -> dict[str, Any]:
        """What Redis holds for this stack's queues (for failure messages)."""
        if not self.settings.broker_url:
            return {}
        import redis

        client = redis.Redis.from_url(self.settings.broker_url)
        try:
            routes = {m.decode(errors="replace") for m in client.smembers("_kombu.binding.charter")}
            return {
                queue_for(m): {
                    "length": client.llen(queue_for(m)),
                    "routed": any(r.endswith(queue_for(m)) for r in routes),
                }
                for m in self.models
            } | {"unacked": client.hlen("unacked")}
        finally:
            client.close()

    # Database reads ------------------------------------------------------------------

    def job_row_status(self, job_id: str) -> str | None:
        with self.db.connect() as conn:
            return conn.scalar(select(Job.status).where(Job.id == job_id))

    def items(self, job_id: str) -> list[Any]:
        with self.db.connect() as conn:
            return list(
                conn.execute(
                    select(
                        WorkItem.id,
                        WorkItem.chunk,
                        WorkItem.status,
                        WorkItem.attempt,
                        WorkItem.lease_owner,
                        WorkItem.last_error,
                        WorkItem.published_at,
                    )
                    .where(WorkItem.job_id == job_id)
                    .order_by(WorkItem.id)
                )
            )

    def labels(self, job_id: str) -> list[Label]:
        with session_factory(self.db)() as session:
            return list(
                session.scalars(
                    select(Label).where(Label.job_id == job_id).order_by(Label.work_item_id)
                )
            )

    def wait_running(self, job_id: str, timeout: float = SCRIPTED_TIMEOUT) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [i for i in self.items(job_id) if i.status == "running"]
            if running:
                return running
            time.sleep(0.05)
        pytest.fail(f"no item of job {job_id} started in {timeout:.0f} s\n{self.tails()}")

    def assert_exactly_once(self, job_id: str, item_count: int) -> dict[str, int]:
        """Count rows: one label per done item, a reason on every other final item,
        no item with two labels. Returns the count of items per state."""
        with self.db.connect() as conn:
            doubles = conn.execute(
                text("SELECT work_item_id, count(*) FROM labels GROUP BY 1 HAVING count(*) > 1")
            ).all()
            per_item = dict(
                conn.execute(
                    select(Label.work_item_id, func.count())
                    .where(Label.job_id == job_id)
                    .group_by(Label.work_item_id)
                ).all()
            )
        assert doubles == [], f"items with more than one label: {doubles}"
        items = self.items(job_id)
        assert len(items) == item_count
        for item in items:
            if item.status == "done":
                assert per_item.get(item.id) == 1, f"done item {item.id} has no label"
            else:
                assert item.status in ("abstained", "failed"), item
                assert item.last_error, f"item {item.id} is {item.status} without a reason"
                assert item.id not in per_item, f"{item.status} item {item.id} has a label"
        assert sum(per_item.values()) == sum(i.status == "done" for i in items)
        states: dict[str, int] = {}
        for item in items:
            states[item.status] = states.get(item.status, 0) + 1
        return states

    def tally(self, expected: dict[str, int], *, shared_database: bool = False) -> dict[str, Any]:
        """The fault matrix's count over accepted jobs (``{job_id: item count}``):
        ``lost`` items without a label or a recorded terminal reason (or missing),
        ``duplicated`` labels beyond one per item, ``unexpected`` labels of items or
        jobs nobody asked for, and the count of items per state."""
        with self.db.connect() as conn:
            labels = conn.execute(select(Label.work_item_id, Label.job_id)).all()
            items = conn.execute(
                select(WorkItem.id, WorkItem.job_id, WorkItem.status, WorkItem.last_error)
            ).all()
        asked = {i.id: i for i in items if i.job_id in expected}
        per_item: dict[int, int] = {}
        for label in labels:
            per_item[label.work_item_id] = per_item.get(label.work_item_id, 0) + 1
        # In a database of the test's own, any label outside the accepted jobs is one
        # nobody asked for; in a shared one, other tests' jobs have labels of their own.
        unexpected = sum(
            1
            for label in labels
            if (label.job_id in expected or not shared_database or label.work_item_id in asked)
            and (label.job_id not in expected or label.work_item_id not in asked)
        )
        missing = sum(expected.values()) - len(asked)
        states: dict[str, int] = {}
        lost = missing
        for item in asked.values():
            states[item.status] = states.get(item.status, 0) + 1
            if item.status == "done":
                lost += item.id not in per_item
            else:  # only a terminal state with its reason accounts for an item
                lost += not (item.status in ("failed", "abstained") and item.last_error)
        return {
            "items": sum(expected.values()),
            "lost": lost,
            "duplicated": sum(n - 1 for n in per_item.values() if n > 1),
            "unexpected": unexpected,
            "states": states,
        }


def base_settings(
    data_dir: Path, database_url: str, broker_url: str | None, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "_env_file": None,
        "env": "test",
        "data_dir": data_dir,
        "database_url": database_url,
        "broker_url": broker_url,
        "secret_key": SECRET,
        "models_dir": MODELS_DIR,
        "artifacts_dir": data_dir / "artifacts",
        "lease_seconds": 6.0,
        "sweep_interval_seconds": 1.0,
        "max_attempts": 3,
        "worker_threads": 1,
        "worker_heartbeat_seconds": 1.0,
        "worker_engine": "scripted",
        "models": {},
        "fault_delay_seconds": 0.0,
        "fault_poison": None,
        "fault_poison_mode": "raise",
    }
    values.update(overrides)
    return Settings(**values)
