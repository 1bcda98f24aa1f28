"""Scheduling overhead: what the platform costs per item when the engine costs nothing.

Real Celery worker processes (``charter worker``'s prefork pool, as the end-to-end
tests start them) run ``compare`` jobs with the scripted engine, which answers at
once, so what is left is the platform: broker delivery, claim and lease, the fenced
write of labels and item states, completion checks and the outbox. For every size
the jobs run over the same batch, one per worker count in turn (lockstep), so load
drift on the shared machine hits every worker count alike.

The outbox phase submits one job of ``--outbox-items`` items in chunks of
``--outbox-chunk-size`` to a model no worker serves, and times the submission (its
insert and the after-commit drain); then, alternately on the same rows, it resets
and re-drains the job's outbox (database mark + publish) and sends the same number
of messages with no database at all (the broker's own ceiling).

    python bench/scheduling_overhead.py --out bench/results/scheduling_overhead_postgres_redis.json
    python bench/scheduling_overhead.py --backend sqlite --sizes 1000,10000 \\
        --out bench/results/scheduling_overhead_sqlite.json
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ROOT,
    SECRET,
    Gateway,
    admin_key,
    log,
    machine,
    plot,
    scratch_database,
    write_result,
)
from bench.label_throughput import group_cpu_seconds
from charter.client import CharterClient
from charter.db.models import Job, Label, Worker, WorkItem
from charter.db.session import make_engine, session_factory
from charter.embedded import start_worker, stop_process
from charter.outbox import publish_pending
from charter.queue import batch_producer, make_celery, publish_chunk, queue_for
from charter.settings import Settings
from services.gateway.batches import service as batches

REDIS = "redis://127.0.0.1:6379/11"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    p.add_argument("--broker-url", default=REDIS, help="Redis for --backend postgres")
    p.add_argument("--sizes", default="1000,10000,100000,1000000")
    p.add_argument("--workers", default="1,2,4", help="pool processes per worker, in turn")
    p.add_argument(
        "--big-workers", default="1,4", help="worker counts at sizes >= --big (time on 2 cores)"
    )
    p.add_argument("--big", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=2, help="jobs per worker count below 100k items")
    p.add_argument("--chunk-size", type=int, default=32, help="the default Settings.chunk_size")
    p.add_argument("--outbox-items", type=int, default=1_000_000, help="0 skips the outbox phase")
    p.add_argument("--outbox-chunk-size", type=int, default=16)
    p.add_argument("--outbox-reps", type=int, default=3)
    p.add_argument(
        "--fillfactor",
        type=int,
        choices=range(10, 101),
        metavar="10..100",
        help="PostgreSQL: work_items' page fill instead of the migration's 70",
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="per job")
    p.add_argument("--out", type=Path)
    p.add_argument("--plot", type=Path, help="SVG; default next to --out")
    return p.parse_args()


def pair_rows(n: int) -> list[tuple[Any, ...]]:
    """Prompt records (prompt, messages, response, response_a, response_b) for compare jobs."""
    return [(f"Question {i}?", None, None, "short", "a longer answer") for i in range(n)]


@contextmanager
def database(args: argparse.Namespace, workdir: Path) -> Iterator[str]:
    if args.backend == "postgres":
        with scratch_database() as url:
            if args.fillfactor is not None:  # measure against another page fill (0004: 70)
                import psycopg

                from bench.common import dsn

                with psycopg.connect(dsn(url), autocommit=True) as conn:
                    conn.execute(f"ALTER TABLE work_items SET (fillfactor = {args.fillfactor})")
            yield url
    else:
        from charter.db.migrate import upgrade

        url = f"sqlite:///{workdir / 'bench.db'}"
        upgrade(url)
        yield url


def new_batch(sessions: sessionmaker[Session], project_id: str, n: int) -> str:
    with sessions() as session, session.begin():
        return batches.create(session, project_id, f"pairs-{n}", pair_rows(n)).id


def wait_done(sessions: sessionmaker[Session], job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            if session.scalar(select(Job.status).where(Job.id == job_id)) == "completed":
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not completed after {timeout:.0f} s")
        time.sleep(0.1)


def job_facts(sessions: sessionmaker[Session], job_id: str) -> dict[str, Any]:
    """Labels written, and the pipelines' own share: each label carries its chunk's
    pipeline seconds (``timings.total``) and its chunk's size (``timings.batch_items``)."""
    with sessions() as session:
        labels = session.scalar(select(func.count()).where(Label.job_id == job_id))
        states = dict(
            session.execute(
                select(WorkItem.status, func.count())
                .where(WorkItem.job_id == job_id)
                .group_by(WorkItem.status)
            ).all()
        )
        timings = session.scalars(
            select(Label.timings).where(Label.job_id == job_id).order_by(Label.id).limit(5000)
        ).all()
    pipeline = statistics.fmean(t["total"] / t["batch_items"] for t in timings)
    return {"labels": labels, "states": states, "pipeline_s_per_item": pipeline}


def wait_registered(sessions: sessionmaker[Session], processes: int, timeout: float = 120) -> None:
    """Until every pool process has loaded and registered (the clock starts after)."""
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            if session.scalar(select(func.count()).select_from(Worker)) >= processes:
                return
        if time.monotonic() > deadline:
            raise TimeoutError("workers did not register")
        time.sleep(0.2)


def run_job(
    client: CharterClient,
    sessions: sessionmaker[Session],
    worker_pid: int,
    gateway: Gateway,
    spec: dict[str, Any],
    items: int,
    timeout: float,
) -> dict[str, Any]:
    cpu = group_cpu_seconds(worker_pid), gateway.cpu_seconds()
    start = time.perf_counter()
    job = client.submit_job(**spec)
    submitted = time.perf_counter() - start
    wait_done(sessions, job["id"], timeout)
    seconds = time.perf_counter() - start
    facts = job_facts(sessions, job["id"])
    assert facts["labels"] == items and facts["states"] == {"done": items}, facts
    worker_cpu = group_cpu_seconds(worker_pid) - cpu[0]
    return {
        "job_id": job["id"],
        "seconds": round(seconds, 3),
        "submit_seconds": round(submitted, 3),
        "items_per_s": round(items / seconds, 1),
        "us_per_item": round(1e6 * seconds / items, 1),
        "worker_cpu_us_per_item": round(1e6 * worker_cpu / items, 1),
        "gateway_cpu_seconds": round(gateway.cpu_seconds() - cpu[1], 2),
        "pipeline_us_per_item": round(1e6 * facts["pipeline_s_per_item"], 1),
        "load_average": machine()["load_average"],
    }


def outbox_phase(
    args: argparse.Namespace,
    client: CharterClient,
    sessions: sessionmaker[Session],
    settings: Settings,
    project_id: str,
    ref: str,
    model: str,
) -> dict[str, Any]:
    """Submission to all chunks published, then drain vs raw broker in lockstep."""
    n = args.outbox_items
    batch_id = new_batch(sessions, project_id, n)
    app = make_celery(settings, name="bench-outbox")
    queue = queue_for(model)

    def queued_messages() -> int:
        with app.connection_for_write() as connection, connection.channel() as channel:
            return int(channel.queue_declare(queue, passive=True).message_count)

    def purge() -> None:
        with app.connection_for_write() as connection, connection.channel() as channel:
            channel.queue_purge(queue)

    start = time.perf_counter()
    job = client.submit_job(
        batch_id=batch_id,
        type="compare",
        constitution=ref,
        model=model,
        chunk_size=args.outbox_chunk_size,
    )
    submit_seconds = time.perf_counter() - start

    def unpublished() -> int:
        with sessions() as session:
            return int(
                session.scalar(
                    select(func.count()).where(
                        WorkItem.job_id == job["id"], WorkItem.published_at.is_(None)
                    )
                )
                or 0
            )

    # The submission publishes its first batch; the gateway's outbox thread the rest.
    while unpublished():
        time.sleep(0.25)
    published_seconds = time.perf_counter() - start
    chunks = job["chunk_count"]
    result: dict[str, Any] = {
        "items": n,
        "chunk_size": args.outbox_chunk_size,
        "chunks": chunks,
        "submit_answered_seconds": round(submit_seconds, 2),
        "submit_to_all_published_seconds": round(published_seconds, 2),
        "messages_after_submit": queued_messages(),
        "drain": [],
        "raw": [],
    }
    for _ in range(args.outbox_reps):
        purge()
        with sessions() as session, session.begin():
            session.execute(
                update(WorkItem).where(WorkItem.job_id == job["id"]).values(published_at=None)
            )
        start = time.perf_counter()
        sent = publish_pending(sessions, app, job_id=job["id"])
        drain = time.perf_counter() - start
        assert sent == chunks == queued_messages(), (sent, chunks)
        purge()
        start = time.perf_counter()
        with batch_producer(app, [model]) as producer:
            for chunk in range(chunks):
                publish_chunk(app, job["id"], chunk, model, producer)
        raw = time.perf_counter() - start
        assert queued_messages() == chunks
        result["drain"].append(round(chunks / drain, 1))
        result["raw"].append(round(chunks / raw, 1))
        log(f"outbox: drain {chunks / drain:.0f} chunks/s, raw broker {chunks / raw:.0f} msg/s")
    purge()
    with sessions() as session, session.begin():  # nothing will run it
        session.execute(update(Job).where(Job.id == job["id"]).values(status="cancelled"))
    app.close()
    drain_mean, raw_mean = statistics.fmean(result["drain"]), statistics.fmean(result["raw"])
    result |= {
        "drain_chunks_per_s": round(drain_mean, 1),
        "raw_messages_per_s": round(raw_mean, 1),
        "drain_over_raw": round(drain_mean / raw_mean, 3),
    }
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean per (size, workers)."""
    out: dict[str, dict[str, Any]] = {}
    for key in sorted({(r["items"], r["workers"]) for r in runs}):
        group = [r for r in runs if (r["items"], r["workers"]) == key]
        out[f"{key[0]}x{key[1]}"] = {
            "items": key[0],
            "workers": key[1],
            "jobs": len(group),
            **{
                field: round(statistics.fmean(r[field] for r in group), 1)
                for field in (
                    "us_per_item",
                    "items_per_s",
                    "worker_cpu_us_per_item",
                    "pipeline_us_per_item",
                )
            },
        }
    return out


def main() -> None:
    args = parse_args()
    # A run stopped with SIGTERM still stops its workers and drops its database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [int(s) for s in args.sizes.split(",") if s]  # "" runs the outbox phase only
    counts = [int(w) for w in args.workers.split(",")]
    big_counts = [int(w) for w in args.big_workers.split(",")]
    broker = args.broker_url if args.backend == "postgres" else None
    tag = secrets.token_hex(3)
    models = {n: f"sched-{tag}-w{n}" for n in counts}
    outbox_model = f"sched-{tag}-outbox"
    facts = {"machine_before": machine(), "args": vars(args) | {"out": str(args.out)}}
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, database(args, Path(tmp)) as url:
        workdir = Path(tmp)
        engine: Engine = make_engine(url)
        sessions = session_factory(engine)
        key, project_id = admin_key(url)
        settings = Settings(
            _env_file=None,
            env="test",
            data_dir=workdir,
            database_url=url,
            broker_url=broker,
            secret_key=SECRET,
            worker_engine="scripted",
            chunk_size=args.chunk_size,
            models_dir=workdir / "models",
        )
        env = {
            "CHARTER_WORKER_MODELS": json.dumps([*models.values(), outbox_model]),
            "CHARTER_BROKER_URL": broker or "",
        }
        workers = {}
        # A 1M-item submission inserts its items and drains its outbox before it answers.
        with (
            Gateway(url, workdir, env=env) as gateway,
            CharterClient(gateway.base, key, timeout=args.timeout) as client,
        ):
            ref = client.push_constitution(ROOT / "constitutions" / "default.yaml")["ref"]
            try:
                for n, model in models.items():
                    workers[n] = start_worker(
                        settings.model_copy(update={"worker_models": [model]}),
                        name=f"bench-w{n}",
                        log=workdir / f"worker-{n}.log",
                        concurrency=n,
                    )
                wait_registered(sessions, sum(counts))
                for size in sizes:
                    batch_id = new_batch(sessions, project_id, size)
                    reps = args.reps if size < 100_000 else 1
                    for rep in range(reps):
                        for n in big_counts if size >= args.big else counts:
                            spec = {
                                "batch_id": batch_id,
                                "type": "compare",
                                "constitution": ref,
                                "model": models[n],
                            }
                            run = run_job(
                                client, sessions, workers[n].pid, gateway, spec, size, args.timeout
                            )
                            runs.append({"items": size, "workers": n, "rep": rep} | run)
                            log(
                                f"{size} items, {n} workers: {run['items_per_s']} items/s, "
                                f"{run['us_per_item']} us/item (load {run['load_average'][0]})"
                            )
                if args.out:  # the worker runs survive a failure of the outbox phase
                    write_result(args.out, facts | {"summary": summarise(runs), "runs": runs})
                if args.outbox_items:
                    facts["outbox"] = outbox_phase(
                        args, client, sessions, settings, project_id, ref, outbox_model
                    )
            finally:
                for process in workers.values():
                    with suppress(Exception):
                        stop_process(process)
        engine.dispose()
    summary = summarise(runs)
    result = facts | {"machine_after": machine(), "summary": summary, "runs": runs}
    write_result(args.out, result)
    if runs and (args.out or args.plot):
        path = args.plot or args.out.with_suffix(".svg")  # type: ignore[union-attr]
        series = {
            f"{n} worker process{'es' if n > 1 else ''}": [
                (s["items"], s["us_per_item"]) for s in summary.values() if s["workers"] == n
            ]
            for n in counts
        }
        plot(
            path,
            series,
            title=f"Scheduling overhead per item ({args.backend}, scripted engine)",
            xlabel="items in the job",
            ylabel="wall µs per item",
        )


if __name__ == "__main__":
    main()
