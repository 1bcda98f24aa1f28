"""The fault matrix, row 7: the gateway SIGKILLed mid-upload and mid-freeze.

The gateway is a real uvicorn process on the private PostgreSQL (its settings
passed as environment, as a deployment would), killed with SIGKILL and started
again on the same database and port.

- **Upload**: two 200,000-row JSONL uploads are sent slowly, one streamed into
  a ``COPY`` (no key) and one with an ``Idempotency-Key`` (held to hash it); the
  gateway dies once half of each is sent, with the ``COPY`` in flight. Nothing of
  either may be visible after the restart (no batch listed, no prompt row); the
  keyed retry succeeds once and replays after, the streamed one is sent again.
- **Freeze**: a version over 150,000 labels (inserted straight into the database)
  freezes in batches in the background; the gateway dies a third of the way in.
  The batches committed so far stay, none half-written; the restarted gateway's
  freezer waits out the dead one's lease and finishes the version without any
  client polling it; the keyed retry of the freeze replays the one version.

``items``: rows uploaded / labels frozen; ``lost``: rows missing after the
successful retry; ``duplicated``: rows stored more than once (or extra batches /
versions); ``unexpected``: rows of an uncommitted upload, or of a version not
ready, visible where they must not be.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from charter.embedded import free_port, settings_env
from charter.settings import Settings
from tests.reliability.conftest import record_fault
from tests.servers import PrivateRedis
from tests.stack import ROOT, base_settings

UPLOAD_ROWS = 200_000
FREEZE_LABELS = 150_000
FREEZE_BATCH_ROWS = 10_000
# Longer than a restart takes, so the restarted gateway finds the dead one's lease
# still live and must wait it out (not just claim it at startup).
FREEZE_LEASE_SECONDS = 20.0
HTTP = httpx.Timeout(120.0, connect=10.0)


class GatewayProcess:
    """``uvicorn`` serving the gateway in its own process group, on a fixed port."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings = settings
        self.log = log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> float:
        """Start and wait until it answers; the seconds that took."""
        begin = time.monotonic()
        # The test's own CHARTER_* variables must not reach it: only its settings.
        inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHARTER_")}
        env = inherited | settings_env(self.settings) | {"PYTHONPATH": str(ROOT)}
        command = [
            sys.executable, "-m", "uvicorn", "services.gateway.app:create_app", "--factory",
            "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
            "--no-access-log",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command,
                cwd=self.settings.data_dir,  # no developer .env
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        while True:
            with suppress(httpx.TransportError):
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return time.monotonic() - begin
            assert self.process.poll() is None, f"the gateway exited:\n{self.tail()}"
            assert time.monotonic() - begin < timeout, f"the gateway did not start:\n{self.tail()}"
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, no lease is handed back."""
        assert self.process is not None
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def make_gateway(tmp_path: Path, fault_database: str, private_redis: PrivateRedis) -> Iterator[Any]:
    opened: list[GatewayProcess] = []

    def make(**overrides: Any) -> GatewayProcess:
        settings = base_settings(
            tmp_path / "gateway", fault_database, private_redis.url, **overrides
        )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        gateway = GatewayProcess(settings, tmp_path / "gateway.log")
        opened.append(gateway)
        return gateway

    yield make
    for gateway in opened:
        gateway.stop()
        print(f"--- gateway log\n{gateway.tail()}")


def _scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


# --------------------------------------------------------------------------- upload


def _line(i: int) -> bytes:
    return f'{{"prompt": "row {i}: what is {i} plus {i}?"}}\n'.encode()


@dataclass
class Upload:
    """One upload sent from a thread, ``pace`` seconds between blocks of rows."""

    base: str
    key: str
    idempotency_key: str | None
    pace: float
    block_rows: int = 1000
    sent_rows: int = 0
    response: httpx.Response | None = None
    error: BaseException | None = None
    thread: threading.Thread = field(init=False)
    hold: bool = False  # stop at half way until ``resume`` is set
    resume: threading.Event = field(default_factory=threading.Event)

    def body(self) -> Iterator[bytes]:
        for start in range(0, UPLOAD_ROWS, self.block_rows):
            stop = min(start + self.block_rows, UPLOAD_ROWS)
            yield b"".join(_line(i) for i in range(start, stop))
            self.sent_rows = stop
            if self.hold and stop >= UPLOAD_ROWS // 2 and not self.resume.is_set():
                # Hold the second half back until the test has killed the gateway, so
                # a fast machine cannot finish the upload first.
                self.resume.wait(120)
            if self.pace:
                time.sleep(self.pace)

    def send(self) -> httpx.Response:
        headers = {"X-API-Key": self.key, "Content-Type": "application/x-ndjson"}
        if self.idempotency_key:
            headers["Idempotency-Key"] = self.idempotency_key
        with httpx.Client(timeout=HTTP) as client:
            return client.post(
                f"{self.base}/v1/batches/upload", params={"name": "big"}, headers=headers,
                content=self.body(),
            )  # fmt: skip

    def start(self) -> Upload:
        def run() -> None:
            try:
                self.response = self.send()
            except BaseException as exc:  # the gateway died under it: what the test wants
                self.error = exc

        self.thread = threading.Thread(target=run, name="upload", daemon=True)
        self.thread.start()
        return self


def _copy_backends(engine: Engine) -> list[int]:
    """Server processes running the gateway's ``COPY prompts`` right now (the table
    name may be quoted: the statement is built from SQL identifiers)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND query ~ '^COPY \"?prompts\"? ' AND state = 'active'"
            )
        )
        return [int(pid) for (pid,) in rows]


def _backends_alive(engine: Engine, pids: list[int]) -> int:
    return int(
        _scalar(engine, "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)", pids=pids)
    )


def _stored_rows(engine: Engine, batch_id: str) -> tuple[int, int]:
    """(rows of the batch, distinct positions holding exactly the row sent there)."""
    with engine.connect() as conn:
        total, correct = conn.execute(
            text(
                "SELECT count(*), count(DISTINCT position) FILTER (WHERE prompt = "
                "'row ' || position || ': what is ' || position || ' plus ' || position || '?') "
                "FROM prompts WHERE batch_id = :b"
            ),
            {"b": batch_id},
        ).one()
    return int(total), int(correct)


def test_gateway_killed_mid_upload(make_gateway: Any, fault_db: Engine, fault_key: str) -> None:
    gateway = make_gateway()
    gateway.start()
    headers = {"X-API-Key": fault_key}
    # ~9 MB each over ~10 s: the gateway parses and stores as fast as it arrives.
    streamed = Upload(gateway.base, fault_key, None, pace=0.05, hold=True).start()
    keyed = Upload(gateway.base, fault_key, "upload-once", pace=0.05, hold=True).start()

    copying: list[int] = []
    deadline = time.monotonic() + 120
    while min(streamed.sent_rows, keyed.sent_rows) < UPLOAD_ROWS // 2 or not copying:
        copying = copying or _copy_backends(fault_db)
        assert streamed.sent_rows < UPLOAD_ROWS, "the upload finished before the kill"
        assert time.monotonic() < deadline, (streamed.sent_rows, keyed.sent_rows, copying)
        time.sleep(0.02)
    sent_at_kill = {"streamed": streamed.sent_rows, "keyed": keyed.sent_rows}
    # The COPY's rows are on disk already, in a transaction that never commits.
    heap_bytes = int(_scalar(fault_db, "SELECT pg_relation_size('prompts')"))
    gateway.kill()
    killed = time.monotonic()
    for upload in (streamed, keyed):
        upload.resume.set()  # what it sends now goes to a dead socket
        upload.thread.join(60)
        assert upload.response is None, upload.response.text if upload.response else ""
        assert isinstance(upload.error, httpx.TransportError), repr(upload.error)

    # The dead gateway's COPY dies with its connection: its server process exits and
    # rolls back (it holds no lock, leaves no row).
    deadline = time.monotonic() + 30
    while _backends_alive(fault_db, copying):
        assert time.monotonic() < deadline, "the dead gateway's COPY is still running"
        time.sleep(0.1)
    visible = {
        "batches_in_db": _scalar(fault_db, "SELECT count(*) FROM prompt_batches"),
        "prompts_in_db": _scalar(fault_db, "SELECT count(*) FROM prompts"),
    }

    restart_seconds = gateway.start()
    with httpx.Client(base_url=gateway.base, headers=headers, timeout=HTTP) as client:
        listed = client.get("/v1/batches").json()["items"]
        visible["batches_listed"] = len(listed)

        # The keyed retry runs the request for the first time (nothing committed)...
        retry = Upload(gateway.base, fault_key, "upload-once", pace=0).send()
        assert retry.status_code == 201, retry.text
        keyed_recovered = time.monotonic() - killed
        # ... and from then on replays that one batch.
        replay = Upload(gateway.base, fault_key, "upload-once", pace=0).send()
        assert replay.status_code == 201 and replay.headers.get("Idempotent-Replayed") == "true"
        assert replay.json() == retry.json()
        again = Upload(gateway.base, fault_key, None, pace=0).send()  # no key: sent again
        assert again.status_code == 201, again.text
        streamed_recovered = time.monotonic() - killed
        batches = client.get("/v1/batches").json()["items"]

    ids = {"keyed": retry.json()["id"], "streamed": again.json()["id"]}
    assert {b["id"] for b in batches} == set(ids.values())
    assert all(b["row_count"] == UPLOAD_ROWS for b in batches), batches
    prompts_total = int(_scalar(fault_db, "SELECT count(*) FROM prompts"))
    for name, recovered in (("keyed", keyed_recovered), ("streamed", streamed_recovered)):
        total, correct = _stored_rows(fault_db, ids[name])
        tally = {
            "items": UPLOAD_ROWS,
            "lost": UPLOAD_ROWS - correct,
            "duplicated": total - correct,
            "unexpected": sum(visible.values()),
        }
        record_fault(
            f"gateway SIGKILL mid-upload ({name})",
            tally,
            recover_seconds=recovered,
            stack="gateway process+postgres",
            sent_rows_at_kill=sent_at_kill[name],
            copy_in_flight_at_kill=bool(copying),
            uncommitted_heap_bytes_at_kill=heap_bytes,
            restart_seconds=round(restart_seconds, 2),
            visible_after_kill=visible,
        )
    assert prompts_total == 2 * UPLOAD_ROWS and len(batches) == 2


# --------------------------------------------------------------------------- freeze


def _seed_labels(engine: Engine, n: int) -> str:
    """``n`` SFT labels of one completed job, written straight into the tables (the
    way a worker fleet leaves them, minus the hours); the job's id."""
    ids = {k: secrets.token_hex(16) for k in ("constitution", "version", "batch", "job")}
    with engine.begin() as conn:
        project = conn.execute(text("SELECT id FROM projects WHERE name = 'faults'")).scalar_one()
        params = {**ids, "project": project, "n": n}
        # Consistent by construction: skip the per-row foreign-key triggers (3x faster).
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for sql in (
            "INSERT INTO constitutions (id, project_id, name, created_at) "
            "VALUES (:constitution, :project, 'default', now())",
            "INSERT INTO constitution_versions (id, constitution_id, version, content, "
            "content_hash, created_at) VALUES (:version, :constitution, 1, '{}', "
            "repeat('0', 64), now())",
            "INSERT INTO prompt_batches (id, project_id, name, row_count, created_at) "
            "VALUES (:batch, :project, 'seed', :n, now())",
            "INSERT INTO prompts (batch_id, position, prompt) "
            "SELECT :batch, g, 'Prompt number ' || g FROM generate_series(0, :n - 1) AS g",
            "INSERT INTO jobs (id, project_id, type, batch_id, constitution_version_id, "
            "constitution_ref, model, params, seed, status, item_count, chunk_count, "
            "created_at, updated_at) VALUES (:job, :project, 'sl_cai', :batch, :version, "
            "'default@1', 'scripted', '{}', 1, 'completed', :n, :n, now(), now())",
            "INSERT INTO work_items (job_id, prompt_id, chunk, status, attempt, updated_at) "
            "SELECT :job, id, position, 'done', 1, now() FROM prompts WHERE batch_id = :batch",
            "INSERT INTO labels (work_item_id, job_id, project_id, prompt_id, kind, "
            "conversation, response, completion, principle_ids, constitution_version_id, "
            "constitution_ref, model, model_revision, engine, template_version, template_hash, "
            "job_params, seed, worker_id, attempt, timings, created_at) "
            "SELECT w.id, w.job_id, :project, w.prompt_id, 'sl_cai', "
            "json_build_array(json_build_object('role', 'user', 'content', p.prompt)), "
            "'draft ' || p.position, 'final answer ' || p.position, '[\"honesty\"]', :version, "
            "'default@1', 'scripted', 'abc123', 'scripted', 'v1', repeat('a', 64), "
            "'{\"temperature\": 0.7}', 1, 'seeder', 1, '{}', now() "
            "FROM work_items AS w JOIN prompts AS p ON p.id = w.prompt_id "
            "WHERE w.job_id = :job ORDER BY w.id",
            "ANALYZE",
        ):
            conn.execute(text(sql), params)
    return ids["job"]


def _version(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT v.id, v.state, v.rows_done, v.rows_total, v.lease_owner, "
                "v.lease_expires_at > now() AS leased, v.checksum, "
                "(SELECT count(*) FROM dataset_rows AS r WHERE r.version_id = v.id) AS stored "
                "FROM dataset_versions AS v"
            )
        ).one()  # exactly one version, ever
    return dict(row._mapping)


def _frozen_rows(engine: Engine, version_id: str, job_id: str) -> dict[str, int]:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT count(*) AS total, count(DISTINCT r.label_id) AS labels, "
                "count(DISTINCT r.seq) AS seqs, min(r.seq) AS first, max(r.seq) AS last, "
                "count(*) FILTER (WHERE l.job_id IS DISTINCT FROM :job) AS foreign_rows "
                "FROM dataset_rows AS r LEFT JOIN labels AS l ON l.id = r.label_id "
                "WHERE r.version_id = :v"
            ),
            {"v": version_id, "job": job_id},
        ).one()
    return {k: int(v) for k, v in row._mapping.items()}


def test_gateway_killed_mid_freeze(make_gateway: Any, fault_db: Engine, fault_key: str) -> None:
    seeding = time.monotonic()
    job_id = _seed_labels(fault_db, FREEZE_LABELS)
    seed_seconds = time.monotonic() - seeding
    gateway = make_gateway(
        freeze_batch_rows=FREEZE_BATCH_ROWS, freeze_lease_seconds=FREEZE_LEASE_SECONDS
    )
    gateway.start()
    headers = {"X-API-Key": fault_key, "Idempotency-Key": "freeze-once"}
    spec = {"name": "big", "kind": "sft", "filter": {"job_ids": [job_id]}}
    first = httpx.post(f"{gateway.base}/v1/datasets", json=spec, headers=headers, timeout=HTTP)
    assert first.status_code == 202, first.text
    accepted = first.json()
    assert accepted["rows_total"] == FREEZE_LABELS and accepted["state"] == "freezing"

    started = time.monotonic()
    deadline = started + 120
    while (version := _version(fault_db))["rows_done"] < FREEZE_LABELS // 3:
        assert version["state"] == "freezing", "the freeze finished before the kill"
        assert time.monotonic() < deadline, version
        time.sleep(0.02)
    gateway.kill()
    killed = time.monotonic()
    at_kill = _version(fault_db)
    # Only whole batches: what is stored is exactly what the version says is done.
    assert at_kill["state"] == "freezing" and at_kill["leased"], at_kill
    assert at_kill["stored"] == at_kill["rows_done"] < FREEZE_LABELS, at_kill
    assert at_kill["rows_done"] % FREEZE_BATCH_ROWS == 0, at_kill

    restart_seconds = gateway.start()
    lease_live_at_restart = bool(_version(fault_db)["leased"])
    api = httpx.Client(base_url=gateway.base, headers={"X-API-Key": fault_key}, timeout=HTTP)
    with api:
        # Not ready: nothing of it can be read; the keyed retry replays the one version.
        export = api.get("/v1/datasets/big@1/export")
        assert export.status_code == 409 or _version(fault_db)["state"] == "ready", export.text
        retry = api.post("/v1/datasets", json=spec, headers={"Idempotency-Key": "freeze-once"})
        assert retry.status_code == 202 and retry.headers.get("Idempotent-Replayed") == "true"
        assert retry.json() == accepted

        # Nobody polls the version (a GET of it would wake a freezer): the restarted
        # gateway's own freezer must find it once the dead lease expires.
        deadline = time.monotonic() + FREEZE_LEASE_SECONDS + 120
        while (version := _version(fault_db))["state"] == "freezing":
            assert time.monotonic() < deadline, version
            time.sleep(0.1)
        recovered = time.monotonic() - killed
        assert version["state"] == "ready" and version["lease_owner"] is None, version

        versions = api.get("/v1/datasets/big/versions").json()
        assert [(v["version"], v["state"]) for v in versions] == [(1, "ready")], versions
        exported = api.get("/v1/datasets/big@1/export")
        assert exported.status_code == 200, exported.text
    digest = hashlib.sha256(exported.content).hexdigest()
    lines = exported.content.splitlines()
    frozen = _frozen_rows(fault_db, version["id"], job_id)
    assert (frozen["seqs"], frozen["first"], frozen["last"]) == (
        frozen["total"],
        0,
        FREEZE_LABELS - 1,
    ), frozen
    assert digest == version["checksum"] == exported.headers["X-Checksum-SHA256"]
    exported_labels = {json.loads(line)["label_id"] for line in lines}
    tally = {
        "items": FREEZE_LABELS,
        "lost": FREEZE_LABELS - frozen["labels"],
        "duplicated": frozen["total"] - frozen["labels"] + (len(lines) - len(exported_labels)),
        "unexpected": frozen["foreign_rows"],
    }
    record_fault(
        "gateway SIGKILL mid-freeze",
        tally,
        recover_seconds=recovered,
        stack="gateway process+postgres",
        rows_done_at_kill=at_kill["rows_done"],
        freeze_seconds_before_kill=round(killed - started, 2),
        restart_seconds=round(restart_seconds, 2),
        lease_seconds=FREEZE_LEASE_SECONDS,
        lease_live_at_restart=lease_live_at_restart,
        seed_seconds=round(seed_seconds, 2),
    )
    assert len(lines) == FREEZE_LABELS
