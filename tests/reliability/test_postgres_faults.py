"""Fault matrix rows 3 and 8: PostgreSQL restarted, and PostgreSQL refusing writes.

Row 3 restarts the private cluster (``fast`` and ``immediate`` shutdown, a few
seconds down) while two workers write labels and a client submits batches and
jobs through the gateway, each with an ``Idempotency-Key``, retrying on 503 and
on connection errors with the same key. Pass: no item lost or labelled twice,
every job done, exactly one job per accepted key, the gateway answers 503 with
``Retry-After`` (never 500) while the database is down and serves again without a
restart once it is back.

Row 8 makes the database refuse label writes for a few seconds: (a) read-only
(``default_transaction_read_only`` for the whole cluster, picked up by the
workers' open connections on the next transaction), (b) disk full, for real where
a tmpfs can be mounted (the labels table on a tiny tablespace that is then
filled), and simulated everywhere by a trigger that raises SQLSTATE 53100 on
label INSERTs. Pass: no item is done without its label, and the job completes
once the fault is lifted.

The in-process tests at the end make a COMMIT succeed on the server while the
worker sees its connection fail (the commit is in doubt), deterministically, which a
real restart hits only by chance.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InternalError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

from charter.db.models import Job, Label, PromptBatch
from charter.db.session import is_transient
from tests.reliability.conftest import record_fault
from tests.servers import PrivatePostgres
from tests.stack import Stack, rows
from workers.engine_loader import load_engines
from workers.runner import ChunkRunner

ITEMS = 300
CHUNK = 10
DELAY = 0.5
"""Seconds per engine call: a critique chunk is one call, so two workers take ~8 s of
engine time for the job, and the fault lands with chunks queued, running and done."""
DOWN_SECONDS = 4.0
RESTART_LEASE = 20.0
"""Row 3's lease: longer than the outage plus one extension interval, as the lease
must be in a deployment (docs/RELIABILITY.md, row 3), so no chunk is run twice."""
REFUSE_SECONDS = 6.0


# --------------------------------------------------------------------------- helpers


def label_count(stack: Stack, job_id: str) -> int:
    with stack.db.connect() as conn:
        return conn.scalar(select(func.count()).where(Label.job_id == job_id)) or 0


def wait_labels(stack: Stack, job_id: str, at_least: int, timeout: float = 120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = label_count(stack, job_id)
        if n >= at_least:
            return n
        time.sleep(0.1)
    pytest.fail(f"only {label_count(stack, job_id)} labels after {timeout:.0f} s\n{stack.tails()}")


def start_job(stack: Stack, workers: int = 2, **overrides: Any) -> tuple[str, dict[str, Any]]:
    model = stack.new_model()
    for _ in range(workers):
        stack.start_worker([model], fault_delay_seconds=DELAY, **overrides)
    job = stack.submit(rows(ITEMS, response=True), model, type="critique", chunk_size=CHUNK)
    # Some chunks done and the rest queued or running when the fault comes.
    wait_labels(stack, job["id"], 3 * CHUNK)
    return model, job


def finished_after(stack: Stack, job_ids: list[str], since: datetime) -> float:
    """Seconds from ``since`` until the last of these jobs completed (its row's clock)."""
    with stack.db.connect() as conn:
        last = conn.scalar(select(func.max(Job.finished_at)).where(Job.id.in_(job_ids)))
    assert last is not None
    return (last.replace(tzinfo=last.tzinfo or UTC) - since).total_seconds()


def first_label_after(stack: Stack, job_id: str, since: datetime) -> float | None:
    """Seconds from ``since`` to the job's first label written after it: how soon the
    workers wrote again."""
    with stack.db.connect() as conn:
        first = conn.scalar(
            select(func.min(Label.created_at)).where(
                Label.job_id == job_id, Label.created_at > since
            )
        )
    if first is None:
        return None
    return round((first.replace(tzinfo=first.tzinfo or UTC) - since).total_seconds(), 2)


def rerun_items(stack: Stack, job_ids: list[str]) -> int:
    """Labels written by a second or later attempt: work that was done again."""
    with stack.db.connect() as conn:
        return (
            conn.scalar(select(func.count()).where(Label.job_id.in_(job_ids), Label.attempt > 1))
            or 0
        )


def admin(server: PrivatePostgres, database: str = "postgres") -> Engine:
    """An autocommit connection that may write even while the cluster defaults to read-only."""
    return create_engine(
        server.database_url(database),
        isolation_level="AUTOCOMMIT",
        connect_args={"options": "-c default_transaction_read_only=off"},
    )


def database_name(stack: Stack) -> str:
    name = stack.db.url.database
    assert name
    return name


# --------------------------------------------------------------------------- the client


@dataclass
class Submitter:
    """Submits a small batch and a job on it in a loop, each with an Idempotency-Key,
    retrying the same key on 503 and on connection errors until it is accepted."""

    url: str
    key: str
    constitution: str
    model: str
    rows_per_job: int = 3
    batches: dict[str, str] = field(default_factory=dict)  # key -> batch id
    jobs: dict[str, str] = field(default_factory=dict)  # key -> job id
    accepted_at: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    unavailable_without_retry_after: int = 0
    replayed: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Submitter:
        self.thread = threading.Thread(target=self._loop, name="submitter", daemon=True)
        self.thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(120)
        assert not self.thread.is_alive(), "the submitter is stuck"

    def _loop(self) -> None:
        with httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=30) as http:
            n = 0
            while not self.stop.is_set() and not self.failures:
                tag = f"{n}-{secrets.token_hex(3)}"
                batch = self._post(
                    http,
                    "/v1/batches",
                    f"batch-{tag}",
                    {"name": f"s{tag}", "rows": rows(self.rows_per_job, f"-s{tag}", response=True)},
                )
                if batch is None:
                    return
                self.batches[f"batch-{tag}"] = batch["id"]
                spec = {
                    "type": "critique",
                    "batch_id": batch["id"],
                    "constitution": self.constitution,
                    "model": self.model,
                    "chunk_size": self.rows_per_job,
                }
                job = self._post(http, "/v1/jobs", f"job-{tag}", spec)
                if job is None:
                    return
                self.jobs[f"job-{tag}"] = job["id"]
                self.accepted_at.append(time.monotonic())
                n += 1
                time.sleep(0.05)

    def _post(
        self, http: httpx.Client, path: str, key: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                response = http.post(path, json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError as exc:
                self.statuses[f"connection error ({type(exc).__name__})"] += 1
                time.sleep(0.2)
                continue
            self.statuses[str(response.status_code)] += 1
            if response.status_code in (200, 201, 202):
                self.replayed += response.headers.get("idempotent-replayed") == "true"
                return response.json()
            if response.status_code == 503:
                self.unavailable_without_retry_after += "retry-after" not in response.headers
                time.sleep(0.2)  # shorter than Retry-After: this client probes the outage
                continue
            self.failures.append(f"{path} {key}: {response.status_code} {response.text[:300]}")
            return None
        self.failures.append(f"{path} {key}: not accepted in 90 s")
        return None


# --------------------------------------------------------------------------- row 3


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restart_during_label_writes_and_submissions(
    make_fault_stack: Callable[..., Stack],
    private_postgres: PrivatePostgres,
    mode: Literal["fast", "immediate"],
) -> None:
    stack = make_fault_stack(lease_seconds=RESTART_LEASE)
    model, job = start_job(stack)
    submitter = Submitter(stack.gateway.url, stack.key, stack.constitution()["ref"], model).start()
    try:
        deadline = time.monotonic() + 60
        while not submitter.jobs and time.monotonic() < deadline and not submitter.failures:
            time.sleep(0.05)
        assert submitter.jobs, f"no submission accepted before the fault: {submitter.failures}"
        before = Counter(i.status for i in stack.items(job["id"]))

        down = time.monotonic()
        private_postgres.restart(mode, down_seconds=DOWN_SECONDS)
        up = time.monotonic()
        up_at = datetime.now(UTC)

        # The gateway serves again by itself: a submission accepted after the restart.
        deadline = up + 60
        while time.monotonic() < deadline and not submitter.failures:
            if any(t > up for t in submitter.accepted_at):
                break
            time.sleep(0.05)
        first_after = min((t for t in submitter.accepted_at if t > up), default=None)
        time.sleep(2.0)  # a few more submissions on the recovered gateway
    finally:
        submitter.finish()
    assert not submitter.failures, (submitter.failures, submitter.statuses)
    assert first_after is not None, (
        f"no submission accepted after the restart: {submitter.statuses}"
    )

    jobs = {job["id"]: ITEMS} | {j: submitter.rows_per_job for j in submitter.jobs.values()}
    for job_id in jobs:
        stack.wait(job_id)

    # Exactly one batch and one job per accepted key: a retry of a commit in doubt is
    # answered by a replay of its response, never by a second job.
    with stack.db.connect() as conn:
        db_jobs = set(conn.scalars(select(Job.id)))
        db_batches = set(conn.scalars(select(PromptBatch.id)))
    assert len(set(submitter.jobs.values())) == len(submitter.jobs)
    assert db_jobs == set(jobs), "jobs without an accepted key, or accepted keys without a job"
    assert len(db_batches) == len(submitter.batches) + 1  # + the main job's batch
    assert set(submitter.batches.values()) <= db_batches

    # While it was down the gateway said 503 with Retry-After, never 500, and kept
    # answering (no connection refused or dropped).
    assert int(submitter.statuses["503"]) > 0, submitter.statuses
    assert submitter.unavailable_without_retry_after == 0
    assert set(submitter.statuses) <= {"200", "201", "202", "503"}, submitter.statuses

    tally = stack.tally(jobs)
    assert tally["states"] == {"done": sum(jobs.values())}, tally
    reruns = rerun_items(stack, list(jobs))
    record_fault(
        f"postgres restart ({mode})",
        tally,
        recover_seconds=finished_after(stack, [job["id"]], up_at),
        stack="postgres+redis",
        resume_seconds=first_label_after(stack, job["id"], up_at),
        all_jobs_recover_seconds=round(finished_after(stack, list(jobs), up_at), 2),
        outage_seconds=round(up - down, 2),
        lease_seconds=RESTART_LEASE,
        items_before=dict(before),
        submissions=len(submitter.jobs),
        http=dict(submitter.statuses),
        replayed=submitter.replayed,
        gateway_recover_seconds=round(first_after - up, 2),
        rerun_items=reruns,
    )
    # The lease outlives the restart: no chunk was taken from a live worker and run again.
    assert reruns == 0


# --------------------------------------------------------------------------- row 8


@contextmanager
def cluster_read_only(server: PrivatePostgres) -> Iterator[None]:
    """Every new transaction on the cluster is read-only, the pooled connections' too
    (they reload the setting before their next command), until the block ends."""
    engine = admin(server)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("ALTER SYSTEM SET default_transaction_read_only = on")
            conn.exec_driver_sql("SELECT pg_reload_conf()")
        yield
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql("ALTER SYSTEM RESET default_transaction_read_only")
            conn.exec_driver_sql("SELECT pg_reload_conf()")
        engine.dispose()


def refuse_writes_for(stack: Stack, job_id: str, seconds: float) -> int:
    """Hold a fault for ``seconds``; the labels of the job committed meanwhile (after a
    short grace for the writes already past their COMMIT when it began)."""
    time.sleep(0.5)
    before = label_count(stack, job_id)
    time.sleep(seconds - 0.5)
    return label_count(stack, job_id) - before


def check_refused_fault(
    stack: Stack, job_id: str, fault: str, lifted_at: datetime, **extra: Any
) -> dict[str, Any]:
    stack.wait(job_id)
    tally = stack.tally({job_id: ITEMS})
    # Every item done, with its label: none was failed or marked done without one.
    assert tally["states"] == {"done": ITEMS}, tally
    record_fault(
        fault,
        tally,
        recover_seconds=finished_after(stack, [job_id], lifted_at),
        stack="postgres+redis",
        resume_seconds=first_label_after(stack, job_id, lifted_at),
        refused_seconds=REFUSE_SECONDS,
        rerun_items=rerun_items(stack, [job_id]),
        **extra,
    )
    return tally


def test_read_only_database_during_label_writes(
    make_fault_stack: Callable[..., Stack], private_postgres: PrivatePostgres
) -> None:
    stack = make_fault_stack()
    _, job = start_job(stack)
    before = Counter(i.status for i in stack.items(job["id"]))
    with cluster_read_only(private_postgres):
        # The gateway says 503 with Retry-After to a write it cannot make, not 500.
        with httpx.Client(base_url=stack.gateway.url, headers={"X-API-Key": stack.key}) as http:
            probe = http.post("/v1/batches", json={"rows": [{"prompt": "refused?"}]})
        assert probe.status_code == 503, probe.text
        assert probe.headers["Retry-After"].isdigit()
        assert "ReadOnlySqlTransaction" in probe.json()["detail"], probe.json()
        written = refuse_writes_for(stack, job["id"], REFUSE_SECONDS)
    lifted_at = datetime.now(UTC)
    assert written == 0, f"{written} labels committed on a read-only database"
    check_refused_fault(
        stack,
        job["id"],
        "postgres read-only during label writes",
        lifted_at,
        items_before=dict(before),
        gateway_while_refused=probe.status_code,
    )


@contextmanager
def labels_on_tmpfs(server: PrivatePostgres, database: str) -> Iterator[Path]:
    """The labels table of ``database`` (heap, TOAST and their forks) moved to a tablespace
    on a 16 MiB tmpfs of its own, so it can run out of space without touching anything
    else: WAL, the other tables and the indexes stay where they were. Needs root."""
    if os.geteuid() != 0:
        pytest.skip("a real disk-full needs root to mount a tmpfs; the trigger variant runs")
    mount = server.root / f"tiny-{secrets.token_hex(3)}"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        mount.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    shutil.chown(mount, "postgres", "postgres")
    name = f"tiny_{secrets.token_hex(3)}"
    engine = admin(server, database)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE TABLESPACE {name} LOCATION '{mount}'")
            conn.exec_driver_sql(f"ALTER TABLE labels SET TABLESPACE {name}")
        yield mount
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql("ALTER TABLE labels SET TABLESPACE pg_default")
            conn.exec_driver_sql(f"DROP TABLESPACE {name}")
        engine.dispose()
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(mount)], check=True)
        mount.rmdir()


@contextmanager
def filled(mount: Path) -> Iterator[None]:
    """Write a file until the filesystem has no byte left; remove it at the end."""
    filler = mount / "filler"
    with filler.open("wb", buffering=0) as out:
        block = b"\0" * (1 << 16)
        try:
            while out.write(block):
                pass
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC: full
    try:
        yield
    finally:
        filler.unlink()


@contextmanager
def label_inserts_refused(stack: Stack) -> Iterator[None]:
    """A statement trigger that fails every INSERT into labels with SQLSTATE 53100
    (disk_full), as PostgreSQL does when it cannot extend the table's file."""
    with stack.db.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse_label() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'could not extend file: No space left on device (simulated)' "
            "USING ERRCODE = 'disk_full'; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse_label BEFORE INSERT ON labels "
            "FOR EACH STATEMENT EXECUTE FUNCTION refuse_label()"
        )
    try:
        yield
    finally:
        with stack.db.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER refuse_label ON labels")
            conn.exec_driver_sql("DROP FUNCTION refuse_label()")


def disk_full_errors(server: PrivatePostgres) -> int:
    return server.log.read_text(errors="replace").count("No space left on device")


@pytest.mark.parametrize("how", ["tmpfs", "trigger"])
def test_disk_full_during_label_writes(
    make_fault_stack: Callable[..., Stack], private_postgres: PrivatePostgres, how: str
) -> None:
    stack = make_fault_stack()
    with ExitStack() as exits:
        mount = (
            exits.enter_context(labels_on_tmpfs(private_postgres, database_name(stack)))
            if how == "tmpfs"
            else None
        )
        _, job = start_job(stack)
        before = Counter(i.status for i in stack.items(job["id"]))
        errors_before = disk_full_errors(private_postgres)
        with filled(mount) if mount else label_inserts_refused(stack):
            written = refuse_writes_for(stack, job["id"], REFUSE_SECONDS)
        lifted_at = datetime.now(UTC)
        refused = disk_full_errors(private_postgres) - errors_before
        # The fault bit: label INSERTs failed with ENOSPC (or the trigger's 53100).
        assert refused > 0, private_postgres.tail()
        if how == "trigger":
            assert written == 0, f"{written} labels committed past the trigger"
        check_refused_fault(
            stack,
            job["id"],
            f"postgres disk full during label writes ({how})",
            lifted_at,
            disk_full=("real: labels on a full tmpfs" if mount else "simulated: trigger, 53100"),
            refused_writes=refused,
            labels_while_full=written,
            items_before=dict(before),
        )
        # Labels table writable again for the teardown's checks; the lease keeper held
        # each waiting chunk's lease (work_items stayed writable), so nothing ran twice.
        assert rerun_items(stack, [job["id"]]) == 0


# --------------------------------------------------------------------------- in doubt


def _wrapped(kind: type[DBAPIError], orig: Exception, **kwargs: Any) -> DBAPIError:
    return kind("INSERT INTO labels ...", None, orig, **kwargs)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_wrapped(OperationalError, psycopg.OperationalError("connection refused")), True),
        (_wrapped(OperationalError, psycopg.errors.AdminShutdown("terminating")), True),
        (_wrapped(OperationalError, psycopg.errors.CannotConnectNow("starting up")), True),
        (_wrapped(OperationalError, psycopg.errors.DiskFull("no space")), True),
        (_wrapped(InternalError, psycopg.errors.ReadOnlySqlTransaction("read-only")), True),
        (_wrapped(OperationalError, psycopg.errors.DeadlockDetected("deadlock")), True),
        (_wrapped(InternalError, psycopg.InternalError("gone"), connection_invalidated=True), True),
        (psycopg.OperationalError("lost during COPY"), True),
        (_wrapped(IntegrityError, psycopg.errors.UniqueViolation("duplicate")), False),
        (_wrapped(ProgrammingError, psycopg.errors.UndefinedTable("no table")), False),
        (_wrapped(OperationalError, psycopg.errors.QueryCanceled("statement timeout")), False),
        (psycopg.errors.DataError("NUL in text"), False),
        (ValueError("not the database"), False),
    ],
    ids=lambda v: type(getattr(v, "orig", None) or v).__name__ if not isinstance(v, bool) else "",
)
def test_which_database_errors_are_waited_out(error: Exception, transient: bool) -> None:
    """Workers wait out the database's state (the gateway answers it 503), never what a
    statement did: that fails the same way however often it is retried."""
    assert is_transient(error) is transient


def _in_doubt_sessions(engine: Engine, phase: str) -> tuple[sessionmaker[Session], list[str]]:
    """Sessions whose first COMMIT of ``phase`` (the claim, or the label write) reaches
    the server and is written, and then fails as if the connection had died with the
    answer: the worker cannot know whether it committed."""
    sessions = sessionmaker(bind=engine, expire_on_commit=False)
    fired: list[str] = []

    @event.listens_for(sessions, "do_orm_execute")
    def _mark(state: ORMExecuteState) -> None:
        if phase == "write":
            hit = state.is_insert and state.statement.table.name == "labels"  # type: ignore[attr-defined]
        else:  # the claim's UPDATE, which bumps the attempt
            hit = state.is_update and "attempt=(work_items.attempt +" in str(state.statement)
        if hit:
            state.session.info["target"] = True

    @event.listens_for(sessions, "after_commit")
    def _die(session: Session) -> None:
        if session.info.pop("target", False) and not fired:
            fired.append(phase)
            raise OperationalError(
                "COMMIT",
                None,
                psycopg.OperationalError("server closed the connection unexpectedly"),
                connection_invalidated=True,
            )

    return sessions, fired


@pytest.mark.parametrize("phase", ["claim", "write"])
def test_commit_in_doubt_is_resolved_by_reading_back(
    make_fault_stack: Callable[..., Stack], phase: str
) -> None:
    stack = make_fault_stack(sweeper=False)
    model = stack.new_model()  # served by no worker process: its chunk runs here
    job = stack.submit(rows(20, response=True), model, type="critique", chunk_size=20)
    settings = stack.worker_settings([model])
    sessions, fired = _in_doubt_sessions(stack.db, phase)
    runner = ChunkRunner(sessions, load_engines(settings), settings, f"test:in-doubt-{phase}")

    report = runner.run_chunk(job["id"], 0)

    assert fired == [phase]
    # Resumed, not left to the lease's expiry or counted as fenced: claimed once,
    # labelled once, each item at its first attempt.
    assert (report.claimed, report.labelled, report.fenced, report.released) == (20, 20, 0, 0)
    assert stack.job_row_status(job["id"]) == "completed"
    assert stack.assert_exactly_once(job["id"], 20) == {"done": 20}
    assert {label.attempt for label in stack.labels(job["id"])} == {1}
    tally = stack.tally({job["id"]: 20})
    assert (tally["lost"], tally["duplicated"], tally["unexpected"]) == (0, 0, 0), tally
