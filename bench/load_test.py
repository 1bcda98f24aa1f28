"""Load: many concurrent clients for minutes against the whole stack, then count rows.

Each client does what an SDK user does, in a loop, until the time is up: create a batch
(``POST /v1/batches``, 16 prompts) and submit a job over it (``POST /v1/jobs``), each
with an ``Idempotency-Key``; poll the job (``GET /v1/jobs/{id}``) with think time until
it completes; read its labels (``GET /v1/jobs/{id}/results``). A refused request (429,
503, a dropped connection) is retried with the same key after ``Retry-After``, as the
SDK does; any 5xx other than a 503 is an error. The gateway runs in its own uvicorn
process(es) on a scratch PostgreSQL database with Redis, real Celery worker processes
(scripted engine) and the sweeper label the jobs while the clients run.

Afterwards, once every accepted job has completed: every accepted submission exists
exactly once (one batch per batch key, one job per job key, nothing else), every job
has one label per prompt, and the results the clients read match. Latency p50/p99 per
route, status codes per route and the gateway's CPU are reported.

    python bench/load_test.py --clients 64 --seconds 120 --out bench/results/load_test.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    DEFAULT_SERVER,
    ROOT,
    SECRET,
    Gateway,
    admin_key,
    log,
    machine,
    proc_cpu_seconds,
    scratch_database,
    write_result,
)

BROKER = "redis://127.0.0.1:6379/10"  # its own db: flushed before and after
MODEL = "smollm2"
ROUTES = ("create batch", "submit job", "job status", "job results")
# Far above what a run sends, as in bench/api_latency.py: counted on every request, never refusing.
NO_LIMITS = json.dumps({scope: "10000000/minute" for scope in ("read", "submit", "admin")})
TIMEOUT_S = 60.0
RETRIES = 8


@dataclass
class Record:
    latencies: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in ROUTES})
    statuses: dict[str, dict[str, int]] = field(default_factory=lambda: {r: {} for r in ROUTES})
    batches: dict[str, str] = field(default_factory=dict)  # idempotency key -> batch id
    jobs: dict[str, str] = field(default_factory=dict)  # idempotency key -> job id
    results_read: dict[str, int] = field(default_factory=dict)  # job id -> labels read
    gave_up: int = 0

    def count(self, route: str, status: str) -> None:
        self.statuses[route][status] = self.statuses[route].get(status, 0) + 1


async def _call(
    record: Record, client: httpx.AsyncClient, route: str, method: str, url: str, **kwargs: Any
) -> httpx.Response | None:
    """One logical request: retried with the same arguments (so the same key) on 429, 503
    and transport errors; every attempt's latency and status is recorded."""
    for attempt in range(RETRIES):
        started = time.perf_counter()
        try:
            response = await client.request(method, url, **kwargs)
            status = str(response.status_code)
        except httpx.TransportError as exc:
            response, status = None, type(exc).__name__
        record.latencies[route].append(time.perf_counter() - started)
        record.count(route, status)
        if response is not None and response.status_code not in (429, 503):
            return response
        wait = float(response.headers.get("Retry-After", 1)) if response is not None else 0.5
        await asyncio.sleep(min(wait, 5.0) * random.uniform(0.5, 1.0) * (attempt + 1))
    record.gave_up += 1
    return None


async def _client(
    record: Record, client: httpx.AsyncClient, n: int, deadline: float, think_s: float
) -> None:
    rows = 16
    while time.monotonic() < deadline:
        key = str(uuid.uuid4())
        prompts = [
            {"prompt": f"Client {n}, batch {key[:8]}: how do I boil an egg? ({i})"}
            for i in range(rows)
        ]
        batch = await _call(
            record, client, "create batch", "POST", "/v1/batches",
            json={"name": f"load-{n}", "rows": prompts}, headers={"Idempotency-Key": key},
        )  # fmt: skip
        if batch is None or batch.status_code != 201:
            continue
        record.batches[key] = batch.json()["id"]
        spec = {
            "type": "sl_cai",
            "batch_id": batch.json()["id"],
            "constitution": "default",
            "model": MODEL,
        }
        job_key = str(uuid.uuid4())
        job = await _call(
            record, client, "submit job", "POST", "/v1/jobs",
            json=spec, headers={"Idempotency-Key": job_key},
        )  # fmt: skip
        if job is None or job.status_code != 202:
            continue
        job_id = job.json()["id"]
        record.jobs[job_key] = job_id
        while time.monotonic() < deadline:
            await asyncio.sleep(think_s * random.uniform(0.5, 1.5))
            status = await _call(record, client, "job status", "GET", f"/v1/jobs/{job_id}")
            if status is not None and status.json().get("status") == "completed":
                results = await _call(
                    record, client, "job results", "GET", f"/v1/jobs/{job_id}/results",
                    params={"limit": 100},
                )  # fmt: skip
                if results is not None and results.status_code == 200:
                    record.results_read[job_id] = len(results.json()["items"])
                break
        await asyncio.sleep(think_s * random.uniform(0.5, 1.5))


async def _load(base: str, key: str, clients: int, seconds: float, think_s: float) -> Record:
    record = Record()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers={"X-API-Key": key}, limits=limits, timeout=TIMEOUT_S
    ) as client:
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(_client(record, client, n, deadline, think_s) for n in range(clients))
        )
    return record


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def _wait_done(url: str, job_ids: set[str], timeout: float) -> float:
    """Seconds until every accepted job completed (after the clients stopped)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    started = time.monotonic()
    try:
        while True:
            with engine.connect() as conn:
                open_ = conn.scalar(
                    text("SELECT count(*) FROM jobs WHERE status NOT IN ('completed', 'cancelled')")
                )
            if not open_:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                with engine.connect() as conn:
                    stuck = conn.execute(
                        text(
                            "SELECT j.id, j.status, w.chunk, w.status, w.attempt, w.lease_owner, "
                            "w.published_at, w.last_error FROM jobs j JOIN work_items w "
                            "ON w.job_id = j.id WHERE j.status NOT IN ('completed', 'cancelled') "
                            "AND w.status <> 'done' ORDER BY w.id LIMIT 20"
                        )
                    ).all()
                raise RuntimeError(
                    f"{open_} of {len(job_ids)} jobs still open after {timeout} s: "
                    + "; ".join(map(str, stuck))
                )
            time.sleep(1)
    finally:
        engine.dispose()


def _count(url: str, record: Record, project_id: str) -> dict[str, Any]:
    """Exactly once, by rows: the accepted submissions and nothing else, one label per item."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            batches = set(conn.scalars(text("SELECT id FROM prompt_batches")).all())
            jobs = dict(conn.execute(text("SELECT id, status FROM jobs")).all())
            labels = dict(
                conn.execute(text("SELECT job_id, count(*) FROM labels GROUP BY job_id")).all()
            )
            items = dict(
                conn.execute(text("SELECT job_id, count(*) FROM work_items GROUP BY job_id")).all()
            )
            doubles = conn.scalar(
                text(
                    "SELECT count(*) FROM (SELECT work_item_id FROM labels GROUP BY 1 "
                    "HAVING count(*) > 1) d"
                )
            )
    finally:
        engine.dispose()
    accepted_batches = set(record.batches.values())
    accepted_jobs = set(record.jobs.values())
    return {
        "batches_accepted": len(record.batches),
        "batches_stored": len(batches),
        "batches_unexpected": len(batches - accepted_batches),
        "batches_lost": len(accepted_batches - batches),
        "jobs_accepted": len(record.jobs),
        "jobs_stored": len(jobs),
        "jobs_unexpected": len(set(jobs) - accepted_jobs),
        "jobs_lost": len(accepted_jobs - set(jobs)),
        "jobs_not_completed": sum(s != "completed" for s in jobs.values()),
        "items": sum(items.values()),
        "labels": sum(labels.values()),
        "items_without_label": sum(items[j] - labels.get(j, 0) for j in items),
        "duplicate_labels": doubles,
        "results_read_short": sum(n < items.get(job, 0) for job, n in record.results_read.items()),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument(
        "--think", type=float, default=0.5, help="Seconds between a client's polls."
    )
    parser.add_argument("--gateway-workers", type=int, default=1, help="uvicorn worker processes.")
    parser.add_argument("--label-workers", type=int, default=2, help="Celery worker processes.")
    parser.add_argument("--server", default=DEFAULT_SERVER, help="PostgreSQL for the scratch db.")
    parser.add_argument("--broker-url", default=BROKER, help="Redis db; flushed before and after.")
    parser.add_argument(
        "--drain-timeout", type=float, default=300.0, help="Seconds for the jobs to finish."
    )
    parser.add_argument("--log-dir", type=Path, help="Keep the workers' logs here.")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import redis

    from charter.embedded import start_worker, stop_process, sweeper_thread
    from charter.settings import Settings

    redis.Redis.from_url(args.broker_url).flushdb()
    started = machine()
    with scratch_database(args.server) as url, ExitStack() as stack:
        data = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        key, project_id = admin_key(url)
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=data,
            database_url=url,
            broker_url=args.broker_url,
            secret_key=SECRET,
            worker_engine="scripted",
            worker_models=[MODEL],
            models={},
        )
        env = {"CHARTER_BROKER_URL": args.broker_url, "CHARTER_RATE_LIMITS": NO_LIMITS}
        gateway = stack.enter_context(Gateway(url, data, env=env, workers=args.gateway_workers))
        pushed = httpx.post(
            f"{gateway.base}/v1/constitutions",
            content=(ROOT / "constitutions" / "default.yaml").read_bytes(),
            headers={"X-API-Key": key, "Content-Type": "application/yaml"},
            timeout=60,
        )
        pushed.raise_for_status()
        stack.enter_context(sweeper_thread(settings))
        for n in range(args.label_workers):
            logs = args.log_dir or data
            logs.mkdir(parents=True, exist_ok=True)
            worker = start_worker(settings, name=f"load{n}", log=logs / f"worker{n}.log")
            stack.callback(stop_process, worker)
        log(f"{args.clients} clients for {args.seconds:.0f} s")
        cpu = gateway.cpu_seconds() + _children_cpu(gateway)
        wall = time.perf_counter()
        record = asyncio.run(_load(gateway.base, key, args.clients, args.seconds, args.think))
        wall = time.perf_counter() - wall
        cpu = gateway.cpu_seconds() + _children_cpu(gateway) - cpu
        drain_s = _wait_done(url, set(record.jobs.values()), timeout=args.drain_timeout)
        counts = _count(url, record, project_id)
    redis.Redis.from_url(args.broker_url).flushdb()
    requests = sum(len(v) for v in record.latencies.values())
    routes = {
        route: {
            "requests": len(record.latencies[route]),
            "statuses": record.statuses[route],
            "p50_ms": _percentile(record.latencies[route], 0.50),
            "p99_ms": _percentile(record.latencies[route], 0.99),
            "max_ms": _percentile(record.latencies[route], 1.0),
        }
        for route in ROUTES
    }
    server_errors = sum(
        n
        for statuses in record.statuses.values()
        for status, n in statuses.items()
        if status.startswith("5") and status != "503"
    )
    result = {
        "benchmark": "load_test",
        "machine_before": started,
        "machine_after": machine(),
        "clients": args.clients,
        "seconds": args.seconds,
        "think_s": args.think,
        "gateway_workers": args.gateway_workers,
        "label_workers": args.label_workers,
        "requests": requests,
        "requests_per_s": round(requests / wall, 1),
        "gateway_cpu_cores": round(cpu / wall, 3),
        "server_errors": server_errors,
        "refused_503": sum(s.get("503", 0) for s in record.statuses.values()),
        "gave_up": record.gave_up,
        "drain_after_load_s": round(drain_s, 1),
        "routes": routes,
        "counts": counts,
    }
    write_result(args.out, result)
    for route, r in routes.items():
        log(
            f"{route}: {r['requests']} requests, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, {r['statuses']}"
        )
    log(f"counts: {counts}")
    return result


def _children_cpu(gateway: Gateway) -> float:
    """CPU so far of uvicorn's worker processes, when it runs several."""
    pid = gateway.process.pid
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with suppress(OSError):
                total += proc_cpu_seconds(int(child))
    return total


if __name__ == "__main__":
    main()
