"""Labels/s through the platform versus the raw engine on the same prompts, in one run.

Raw: the pipelines called in-process on a loaded TransformersEngine, chunk by
chunk. Platform: the embedded stack (gateway over HTTP, SQLite or PostgreSQL,
filesystem or Redis broker, a real Celery worker process, the sweeper) labelling
the same rows as a job, timed from submission to completion after a warm-up job
has loaded the model in the worker. The ratio is what the platform costs.

    python bench/label_throughput.py --job compare --prompts 64 --chunk-size 16
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def rows(n: int, job: str) -> list[dict[str, str]]:
    prompts = [
        json.loads(line)["prompt"]
        for line in (ROOT / "examples" / "prompts.jsonl").read_text().splitlines()
        if line.strip()
    ]
    out = []
    for i in range(n):
        prompt = prompts[i % len(prompts)]
        row = {"prompt": prompt}
        if job == "compare":
            row |= {
                "response_a": f"I can help with that ({i}).",
                "response_b": "I would rather not answer that question.",
            }
        out.append(row)
    return out


def raw(args: argparse.Namespace, data: list[dict[str, str]], params: dict) -> float:
    from charter.core.constitution import Constitution
    from charter.core.jobs import JobParams, JobType
    from charter.model_store import prepare_smollm2
    from charter.settings import Settings
    from workers import pipelines
    from workers.engines.transformers_engine import TransformersEngine

    settings = Settings()
    engine = TransformersEngine(
        prepare_smollm2(settings.models_dir / "smollm2"),
        model_name="smollm2",
        max_batch_size=args.chunk_size,
        num_threads=args.threads,
    )
    constitution = Constitution.model_validate(
        yaml.safe_load((ROOT / "constitutions" / "default.yaml").read_text())
    )
    job_params = JobParams.model_validate(params)
    items = [
        pipelines.Item(
            i,
            i,
            i,
            1,
            [{"role": "user", "content": r["prompt"]}],
            None,
            r.get("response_a"),
            r.get("response_b"),
        )
        for i, r in enumerate(data)
    ]
    warm = pipelines.Context(engine, constitution, job_params, 0, pipelines.Timer())
    pipelines.run(warm, JobType(args.job), items[:1], "warm")
    start = time.perf_counter()
    for chunk in range(0, len(items), args.chunk_size):
        ctx = pipelines.Context(engine, constitution, job_params, 1, pipelines.Timer())
        outcomes = pipelines.run(
            ctx, JobType(args.job), items[chunk : chunk + args.chunk_size], chunk
        )
        assert len(outcomes) == len(items[chunk : chunk + args.chunk_size])
    return time.perf_counter() - start


def platform(
    args: argparse.Namespace, data: list[dict[str, str]], params: dict, workdir: Path
) -> float:
    from charter.client import CharterClient
    from charter.db.migrate import upgrade
    from charter.db.session import make_engine, session_factory
    from charter.embedded import GatewayThread, start_worker, stop_process, sweeper_thread
    from charter.projects import ensure_project, issue_key
    from charter.settings import Settings

    settings = Settings(
        data_dir=workdir,
        database_url=args.database_url,
        broker_url=args.broker_url,
        worker_max_batch=args.chunk_size,
        worker_threads=args.threads,
        chunk_size=args.chunk_size,
    )
    upgrade(settings.effective_database_url)
    with session_factory(make_engine(settings.effective_database_url))() as session:
        project = ensure_project(session, f"bench-{int(time.time())}")
        _, key = issue_key(session, project.id, ["admin"], settings.secret_key)
        session.commit()
    with GatewayThread(settings) as gateway, sweeper_thread(settings):
        worker = start_worker(settings, name="bench", log=workdir / "worker.log")
        try:
            with CharterClient(gateway.url, key) as client:
                ref = client.push_constitution(ROOT / "constitutions" / "default.yaml")["ref"]
                spec = {
                    "type": args.job,
                    "constitution": ref,
                    "model": "smollm2",
                    "params": params,
                    "seed": 1,
                }
                warm = client.create_batch(data[:1], name="warm")
                client.wait(client.submit_job(batch_id=warm["id"], **spec)["id"], poll=0.2)
                batch = client.create_batch(data, name="bench")
                start = time.perf_counter()
                job = client.wait(client.submit_job(batch_id=batch["id"], **spec)["id"], poll=0.05)
                seconds = time.perf_counter() - start
                assert job["status"] == "completed", job
                finished = job["counts"]["done"] + job["counts"]["abstained"]
                assert finished == len(data), job["counts"]
        finally:
            stop_process(worker)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--job", default="compare", choices=["compare", "rl_cai", "sl_cai"])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per engine")
    parser.add_argument("--database-url", default=None, help="default: embedded SQLite")
    parser.add_argument("--broker-url", default=None, help="default: filesystem broker")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    data = rows(args.prompts, args.job)
    params = {"swap": True, "sampling": {"max_tokens": args.max_tokens}}
    raw_s = raw(args, data, params)
    with tempfile.TemporaryDirectory() as tmp:
        platform_s = platform(args, data, params, Path(tmp))
    result = {
        "job": args.job,
        "items": len(data),
        "chunk_size": args.chunk_size,
        "raw_seconds": round(raw_s, 2),
        "platform_seconds": round(platform_s, 2),
        "raw_labels_per_s": round(len(data) / raw_s, 3),
        "platform_labels_per_s": round(len(data) / platform_s, 3),
        "ratio": round(raw_s / platform_s, 3),
        "database": args.database_url or "sqlite",
        "broker": args.broker_url or "filesystem",
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
