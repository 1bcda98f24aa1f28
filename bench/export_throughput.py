"""Dataset export rows/s through the gateway versus PostgreSQL COPY of the same rows.

Builds a fresh PostgreSQL database, inserts N labels with COPY (default one
million), freezes them into a dataset version through the gateway
(``POST /v1/datasets``), then streams the version's JSONL export from a
uvicorn subprocess to /dev/null (curl) and compares with
``COPY (SELECT <the columns the export reads> ...) TO STDOUT`` of the same rows.
The gateway's memory is read from /proc/<pid>/status while it streams (VmRSS
samples) and afterwards (VmHWM, the peak): flat memory means the peak does not
grow with the rows sent.

    python bench/export_throughput.py --rows 1000000 --kind sft
    python bench/export_throughput.py --rows 100000 --kind preference --repeat 3

``ratio`` is the best COPY time over the best gateway time (``--repeat`` runs
each, alternating, on a machine that may be shared); ``ratio_per_run`` pairs
each gateway run with the COPY run right after it. The database is dropped at
the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret-" + secrets.token_hex(8)
PHRASE = (
    "the assistant should explain clearly why this request may be harmful and offer a safer "
    "alternative that still helps with the underlying goal while staying honest kind and "
    "respectful of the person asking including when the topic is sensitive or très délicat"
)
WORDS = tuple(PHRASE.split(" "))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Texts:
    """Random word strings, drawn once and reused, so that generating rows is cheap."""

    def __init__(self, rng: random.Random, pool: int = 4096) -> None:
        self._rng = rng
        self._pools: dict[int, list[str]] = {}
        self._size = pool

    def __call__(self, words: int) -> str:
        pool = self._pools.get(words)
        if pool is None:
            pool = self._pools[words] = [
                " ".join(self._rng.choice(WORDS) for _ in range(words)) for _ in range(self._size)
            ]
        return pool[self._rng.randrange(self._size)]


# --------------------------------------------------------------------------- database


def create_database(server: str) -> str:
    url = make_url(server)
    name = f"charter_bench_{secrets.token_hex(4)}"
    with psycopg.connect(_dsn(url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(server: str, url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(_dsn(make_url(server)), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _dsn(url: Any) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def seed(url: str, rows: int, kind: str) -> tuple[str, str]:
    """Project, key, constitution, batch, job, work items and ``rows`` labels; the key."""
    from charter.db.migrate import upgrade
    from charter.db.models import Base
    from charter.db.session import make_engine, session_factory
    from charter.projects import ensure_project, issue_key

    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as session, session.begin():
        project = ensure_project(session, "bench")
        _, key = issue_key(session, project.id, ["admin"], SECRET, name="bench")
        project_id = project.id
    engine.dispose()
    assert Base.metadata.tables  # the schema came from the migrations

    job_type = "sl_cai" if kind == "sft" else "compare"
    ids = {k: secrets.token_hex(16) for k in ("constitution", "version", "batch", "job")}
    with psycopg.connect(_dsn(make_url(url))) as conn:
        conn.execute(
            "INSERT INTO constitutions (id, project_id, name, created_at) "
            "VALUES (%s, %s, 'default', now())",
            (ids["constitution"], project_id),
        )
        conn.execute(
            "INSERT INTO constitution_versions (id, constitution_id, version, content, "
            "content_hash, created_at) VALUES (%s, %s, 1, '{}', %s, now())",
            (ids["version"], ids["constitution"], "0" * 64),
        )
        conn.execute(
            "INSERT INTO prompt_batches (id, project_id, name, row_count, created_at) "
            "VALUES (%s, %s, 'bench', %s, now())",
            (ids["batch"], project_id, rows),
        )
        conn.execute(
            "INSERT INTO prompts (batch_id, position, prompt) "
            "SELECT %s, g, 'Prompt number ' || g FROM generate_series(0, %s - 1) AS g "
            "ORDER BY g",
            (ids["batch"], rows),
        )
        conn.execute(
            "INSERT INTO jobs (id, project_id, type, batch_id, constitution_version_id, "
            "constitution_ref, model, params, seed, status, item_count, chunk_count, "
            "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, 'default@1', 'smollm2', "
            "'{}', 1, 'queued', %s, %s, now(), now())",
            (ids["job"], project_id, job_type, ids["batch"], ids["version"], rows, rows),
        )
        conn.execute(
            "INSERT INTO work_items (job_id, prompt_id, chunk, status, attempt, updated_at) "
            "SELECT %s, id, position, 'done', 1, now() FROM prompts WHERE batch_id = %s "
            "ORDER BY position",
            (ids["job"], ids["batch"]),
        )
        span = conn.execute(
            "SELECT min(w.id), max(w.id), min(p.id), max(p.id) FROM work_items w "
            "JOIN prompts p ON p.id = w.prompt_id"
        ).fetchone()
        assert span is not None
        w0, w1, p0, p1 = span
        assert w1 - w0 + 1 == rows and p1 - p0 + 1 == rows, "ids are not contiguous"
        log(f"prompts and work items in; COPY {rows} {job_type} labels")
        start = time.perf_counter()
        columns = (
            "work_item_id, job_id, project_id, prompt_id, kind, conversation, response, "
            "completion, response_a, response_b, p_a, p_a_forward, p_a_swapped, "
            "swap_disagreement, choice_mass, principle_ids, constitution_version_id, "
            "constitution_ref, model, model_revision, engine, template_version, template_hash, "
            "sampling, seed, worker_id, attempt, timings, created_at"
        )
        rng = random.Random(0)
        text = Texts(rng)
        fixed = (
            f"{ids['version']}\tdefault@1\tsmollm2\tabc123def4567890\ttransformers\tv3\t"
            f"{'ab' * 32}\t"
            '{"max_tokens": 192, "temperature": 0.7}\t1\tworker-1\t1\t{"total": 1.5}\t'
            "2026-01-01 00:00:00+00\n"
        )
        # The rows are consistent by construction: skip the per-row foreign-key triggers.
        conn.execute("SET session_replication_role = replica")
        with conn.cursor() as cursor, cursor.copy(f"COPY labels ({columns}) FROM STDIN") as copy:
            lines: list[str] = []
            for i in range(rows):
                conversation = json.dumps(
                    [{"role": "user", "content": f"Prompt number {i}: {text(12)}?"}],
                    ensure_ascii=False,
                )
                if kind == "sft":
                    response, completion = text(40), text(60)
                    pair = "\\N\t\\N\t\\N\t\\N\t\\N\t\\N\t\\N"
                    principles = '["harmful-content", "honesty"]'
                else:
                    response, completion = "\\N", "\\N"
                    p = rng.random()
                    pair = (
                        f"{text(30)}\t{text(30)}\t{p!r}\t{p!r}\t{p!r}\t"
                        f"{'t' if rng.random() < 0.1 else 'f'}\t0.93"
                    )
                    principles = '["less-harmful"]'
                lines.append(
                    f"{w0 + i}\t{ids['job']}\t{project_id}\t{p0 + i}\t{job_type}\t"
                    f"{conversation}\t{response}\t{completion}\t{pair}\t{principles}\t{fixed}"
                )
                if len(lines) == 10_000:
                    copy.write("".join(lines))
                    lines.clear()
            copy.write("".join(lines))
        conn.commit()
        conn.execute("ANALYZE")
        log(f"labels in: {rows / (time.perf_counter() - start):,.0f} rows/s")
    return key, project_id


# --------------------------------------------------------------------------- gateway


class Gateway:
    """uvicorn serving the gateway in a subprocess, with its memory readable."""

    def __init__(self, url: str, data_dir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = os.environ | {
            "CHARTER_DATABASE_URL": url,
            "CHARTER_SECRET_KEY": SECRET,
            "CHARTER_DATA_DIR": str(data_dir),
            "PYTHONPATH": str(ROOT),
        }
        env.pop("CHARTER_BROKER_URL", None)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "services.gateway.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=data_dir,  # no developer .env
            env=env,
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.2)

    def memory(self, field: str) -> int:
        """VmRSS or VmHWM in KiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def cpu_seconds(self) -> float:
        """User + system CPU time the gateway process (all its threads) has used."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def export_via_gateway(gateway: Gateway, key: str, ref: str, start: int = 0) -> dict[str, Any]:
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            samples.append(gateway.memory("VmRSS"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu = gateway.cpu_seconds()
    begin = time.perf_counter()
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "--fail",
            "-o",
            "/dev/null",
            "-H",
            f"X-API-Key: {key}",
            "-w",
            "%{size_download}",
            f"{gateway.base}/v1/datasets/{ref}/export?format=jsonl&start={start}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds = time.perf_counter() - begin
    cpu = gateway.cpu_seconds() - cpu
    done.set()
    sampler.join()
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "bytes": int(out.stdout),
        "rss_kib_min": min(samples, default=0),
        "rss_kib_max": max(samples, default=0),
        "hwm_kib": gateway.memory("VmHWM"),
    }


def copy_baseline(url: str, version_id: str, kind: str) -> dict[str, Any]:
    """COPY of the columns the export reads, in the export's order, read and discarded."""
    from services.gateway.datasets.export import _LABEL_COLUMNS

    columns = ", ".join(f"l.{c.key}" for c in _LABEL_COLUMNS[kind])
    query = (
        f'COPY (SELECT r."row", {columns} FROM dataset_rows r '
        "LEFT JOIN labels l ON l.id = r.label_id "
        f"WHERE r.version_id = '{version_id}' ORDER BY r.seq) TO STDOUT"
    )
    size = 0
    begin = time.perf_counter()
    with (
        psycopg.connect(_dsn(make_url(url))) as conn,
        conn.cursor() as cursor,
        cursor.copy(query) as copy,
    ):
        for block in copy:
            size += len(block)
    return {"seconds": time.perf_counter() - begin, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--kind", choices=("sft", "preference"), default="sft")
    parser.add_argument("--repeat", type=int, default=2, help="Best of this many runs each.")
    parser.add_argument(
        "--server",
        default=os.environ.get(
            "CHARTER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
        ),
        help="PostgreSQL server (a database on it); the benchmark creates its own database.",
    )
    parser.add_argument("--keep", action="store_true", help="Keep the benchmark database.")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()

    url = create_database(args.server)
    log(f"database {make_url(url).database}")
    gateway = None
    try:
        key, _ = seed(url, args.rows, args.kind)
        with tempfile.TemporaryDirectory() as tmp:
            gateway = Gateway(url, Path(tmp))
            log("freezing the version through the gateway")
            begin = time.perf_counter()
            response = httpx.post(
                f"{gateway.base}/v1/datasets",
                json={"name": "bench", "kind": args.kind},
                headers={"X-API-Key": key},
                timeout=None,
            )
            response.raise_for_status()
            version = response.json()
            freeze_s = time.perf_counter() - begin
            freeze_hwm = gateway.memory("VmHWM")
            log(f"froze {version['ref']}: {version['row_count']} rows in {freeze_s:.1f}s")
            gateway.stop()
            # A fresh gateway for the exports, so its peak memory is theirs alone.
            gateway = Gateway(url, Path(tmp))
            idle_hwm = gateway.memory("VmHWM")
            with psycopg.connect(_dsn(make_url(url))) as conn:
                row = conn.execute(
                    "SELECT v.id FROM dataset_versions v JOIN datasets d ON d.id = v.dataset_id "
                    "WHERE d.name = 'bench' AND v.version = %s",
                    (version["version"],),
                ).fetchone()
                assert row is not None
                version_id = row[0]
            n = version["row_count"]
            tail = export_via_gateway(gateway, key, version["ref"], start=n - n // 10)
            log(f"last 10% via the gateway: {tail['seconds']:.2f}s, peak {tail['hwm_kib']} KiB")
            runs, copies = [], []
            for attempt in range(args.repeat):
                runs.append(export_via_gateway(gateway, key, version["ref"]))
                copies.append(copy_baseline(url, version_id, args.kind))
                log(
                    f"run {attempt + 1}: gateway {n / runs[-1]['seconds']:,.0f} rows/s, "
                    f"COPY {n / copies[-1]['seconds']:,.0f} rows/s"
                )
            best = min(runs, key=lambda r: r["seconds"])
            copy = min(copies, key=lambda r: r["seconds"])
            result = {
                "rows": n,
                "kind": args.kind,
                "freeze_seconds": round(freeze_s, 2),
                "freeze_gateway_peak_rss_mib": round(freeze_hwm / 1024, 1),
                "gateway_rows_per_s": round(n / best["seconds"]),
                "gateway_seconds": round(best["seconds"], 2),
                "gateway_mib": round(best["bytes"] / 2**20, 1),
                "gateway_cpu_us_per_row": round(best["cpu_seconds"] / n * 1e6, 1),
                "copy_rows_per_s": round(n / copy["seconds"]),
                "copy_seconds": round(copy["seconds"], 2),
                "copy_mib": round(copy["bytes"] / 2**20, 1),
                "ratio": round(copy["seconds"] / best["seconds"], 3),
                "ratio_per_run": [
                    round(c["seconds"] / r["seconds"], 3) for r, c in zip(runs, copies, strict=True)
                ],
                "gateway_rss_mib_idle_peak": round(idle_hwm / 1024, 1),
                "gateway_rss_mib_after_last_10pct": round(tail["hwm_kib"] / 1024, 1),
                "gateway_rss_mib_during_export": [
                    round(best["rss_kib_min"] / 1024, 1),
                    round(best["rss_kib_max"] / 1024, 1),
                ],
                "gateway_rss_mib_peak_after_all": round(gateway.memory("VmHWM") / 1024, 1),
            }
    finally:
        if gateway is not None and gateway.process.poll() is None:
            gateway.stop()
        if not args.keep:
            drop_database(args.server, url)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
