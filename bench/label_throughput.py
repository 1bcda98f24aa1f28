"""Labels/s of the platform against the engine and against a plain transformers loop, in ONE run.

On the same variable-length comparison pairs (bench/data/hhh_pairs.jsonl: 40 public
HHH pairs; without few-shot their feedback prompts run 153-895 tokens):

(a) ``engine``: Charter's pipelines called in-process on a loaded TransformersEngine,
    chunk by chunk, exactly as a worker runs a chunk;
(b) ``plain``: the batch-1 loop a user would write without Charter (``compare`` only):
    AutoModelForCausalLM + apply_chat_template + one forward per feedback prompt,
    reading the A/B log-probs at the last position;
(c) ``platform``: the embedded stack (gateway over HTTP, SQLite or PostgreSQL, the
    filesystem or Redis broker, a real Celery worker process, the sweeper), timed from
    submission to completion: ``cold`` is the first job on a fresh worker (the clock
    starts before the worker process, so it includes the model load), ``warm`` the
    same job submitted again to the loaded worker.

(a) and (b) run before (c) and after each of its warm jobs, and their means are
compared with (c)'s, so drift of a shared machine's load hits every side alike. (b) also checks that the engine's
p_A equals batch-1's on every label.

    python bench/label_throughput.py --job compare --pairs 40 --threads 1 \\
        --out bench/results/label_throughput_sqlite.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform as platform_module
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data" / "hhh_pairs.jsonl"
MODEL_NAME = "bench-model"


def rows(path: Path, n: int, job: str) -> list[dict[str, str]]:
    """The first ``n`` pairs; ``compare`` supplies both responses, other jobs the prompt only."""
    pairs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if n > len(pairs):
        raise SystemExit(f"{path} has {len(pairs)} pairs, not {n}")
    out = []
    for pair in pairs[:n]:
        row = {"prompt": pair["prompt"]}
        if job == "compare":
            row |= {"response_a": pair["response_a"], "response_b": pair["response_b"]}
        out.append(row)
    return out


def items(data: list[dict[str, str]]) -> list[Any]:
    from workers import pipelines

    return [
        pipelines.Item(
            item_id=i,
            prompt_id=i,
            position=i,
            attempt=1,
            conversation=[{"role": "user", "content": r["prompt"]}],
            response=None,
            response_a=r.get("response_a"),
            response_b=r.get("response_b"),
        )
        for i, r in enumerate(data)
    ]


def run_chunks(engine: Any, args: argparse.Namespace, work: list[Any], params: dict) -> list[Any]:
    """The pipelines over ``work``, one call per chunk, as ``ChunkRunner`` makes them."""
    from charter.core.constitution import Constitution
    from charter.core.jobs import JobParams, JobType
    from workers import pipelines

    constitution = Constitution.model_validate(
        yaml.safe_load((ROOT / "constitutions" / "default.yaml").read_text())
    )
    job_params = JobParams.model_validate(params)
    outcomes = []
    for start in range(0, len(work), args.chunk_size):
        ctx = pipelines.Context(engine, constitution, job_params, args.seed, pipelines.Timer())
        chunk = work[start : start + args.chunk_size]
        outcomes += pipelines.run(ctx, JobType(args.job), chunk, start // args.chunk_size)
    return outcomes


class Recorder:
    """A scripted engine that keeps what the pipelines ask it to score."""

    def __init__(self) -> None:
        from workers.engines.scripted import ScriptedEngine

        self.inner = ScriptedEngine(model_name=MODEL_NAME)
        self.engine_name, self.model_name = "recorder", MODEL_NAME
        self.model_revision, self.special_tokens = "recorder", self.inner.special_tokens
        self.scored: list[tuple[Any, str]] = []

    def generate(self, conversations: Any, params: Any) -> list[str]:
        return self.inner.generate(conversations, params)

    def choice_logprobs(self, conversations: Any, prefixes: Any, choices: Any = ("A", "B")) -> Any:
        self.scored += list(zip(conversations, prefixes, strict=True))
        return self.inner.choice_logprobs(conversations, prefixes, choices)


def load_engine(args: argparse.Namespace) -> Any:
    if args.engine == "scripted":
        from workers.engines.scripted import ScriptedEngine

        return ScriptedEngine(model_name=MODEL_NAME)
    from workers.engines.transformers_engine import TransformersEngine

    return TransformersEngine(
        args.model_dir,
        model_name=MODEL_NAME,
        max_batch_size=args.max_batch,
        max_batch_tokens=args.max_batch_tokens,
        num_threads=args.threads,
    )


def engine_pass(engine: Any, args: argparse.Namespace, work: list[Any], params: dict) -> dict:
    start, cpu = time.perf_counter(), time.process_time()
    outcomes = run_chunks(engine, args, work, params)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(outcomes) == len(work)
    p_a = {
        o.item.item_id: (o.fields.get("p_a_forward"), o.fields.get("p_a_swapped")) for o in outcomes
    }
    return {"seconds": seconds, "cpu_seconds": cpu, "p_a": p_a}


def plain_pass(model_dir: Path, scored: list[tuple[Any, str]]) -> dict:
    """A user's batch-1 loop: no Charter code, one forward per feedback prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    a_id, b_id = tokenizer.convert_tokens_to_ids("A"), tokenizer.convert_tokens_to_ids("B")
    logprobs = []
    start, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for conversation, prefix in scored:
            text = tokenizer.apply_chat_template(
                list(conversation), add_generation_prompt=True, tokenize=False
            )
            ids = tokenizer(text + prefix, add_special_tokens=False, return_tensors="pt").input_ids
            last = model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
            lp = torch.log_softmax(last, dim=-1)
            logprobs.append((float(lp[a_id]), float(lp[b_id])))
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "logprobs": logprobs,
    }


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in a process group (Linux /proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])  # utime stime
    return total / os.sysconf("SC_CLK_TCK")


def p_a(a: float, b: float) -> float:
    return math.exp(a) / (math.exp(a) + math.exp(b))


def platform_pass(
    args: argparse.Namespace,
    data: list[dict[str, str]],
    params: dict,
    workdir: Path,
    between: Callable[[], None],
) -> dict:
    """A cold job, then ``--warm-jobs`` warm ones, calling ``between`` after each warm
    job (the in-process passes, so each warm job is bracketed by them)."""
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
        worker_engine="scripted" if args.engine == "scripted" else "transformers",
        worker_models=[MODEL_NAME],
        models={MODEL_NAME: str(args.model_dir)} if args.model_dir else {},
        models_dir=workdir / "models",
        worker_max_batch=args.max_batch,
        worker_max_batch_tokens=args.max_batch_tokens,
        worker_threads=args.threads,
        chunk_size=args.chunk_size,
    )
    upgrade(settings.effective_database_url)
    with session_factory(make_engine(settings.effective_database_url))() as session:
        project = ensure_project(session, f"bench-{time.time_ns()}")
        _, key = issue_key(session, project.id, ["admin"], settings.secret_key)
        session.commit()
    out: dict[str, Any] = {}
    with (
        GatewayThread(settings) as gateway,
        sweeper_thread(settings),
        CharterClient(gateway.url, key) as client,
    ):
        ref = client.push_constitution(ROOT / "constitutions" / "default.yaml")["ref"]
        spec = {
            "type": args.job,
            "constitution": ref,
            "model": MODEL_NAME,
            "params": params,
            "seed": args.seed,
        }
        batch = client.create_batch(data, name="bench")
        start = time.perf_counter()
        worker = start_worker(settings, name="bench", log=workdir / "worker.log")
        try:
            phases = ["cold"] + [f"warm{k}" for k in range(1, args.warm_jobs + 1)]
            for phase in phases:
                if phase != "cold":
                    start = time.perf_counter()
                cpu = time.process_time(), group_cpu_seconds(worker.pid)
                job = client.submit_job(batch_id=batch["id"], **spec)
                job = client.wait(job["id"], poll=args.poll, timeout=args.timeout)
                seconds = time.perf_counter() - start
                assert job["status"] == "completed", job
                finished = job["counts"].get("done", 0) + job["counts"].get("abstained", 0)
                assert finished == len(data), job["counts"]
                out[phase] = {
                    "seconds": seconds,
                    "job_id": job["id"],
                    # CPU, which load drift moves less than wall time: the worker's
                    # processes, and this one (gateway, sweeper, the polling client).
                    "worker_cpu_seconds": group_cpu_seconds(worker.pid) - cpu[1],
                    "gateway_cpu_seconds": time.process_time() - cpu[0],
                } | job_breakdown(client, job["id"])
                if phase != "cold":
                    between()
            out["p_a"] = job_p_a(client, out[phases[-1]]["job_id"])
        finally:
            stop_process(worker)
    return out


def job_breakdown(client: Any, job_id: str) -> dict[str, float]:
    """Time inside the worker's pipelines, from the timings every label carries
    (one entry per chunk: all labels of a chunk carry the same timings)."""
    labels = list(client.results(job_id))
    chunks = {json.dumps(r["timings"], sort_keys=True): r["timings"] for r in labels}
    return {"pipeline_seconds": sum(t.get("total", 0.0) for t in chunks.values())}


def job_p_a(client: Any, job_id: str) -> dict[int, tuple[Any, Any]]:
    """p_A of both orders by item position (prompt ids follow the batch's row order)."""
    ids = sorted(i["prompt_id"] for i in client.items(job_id))
    position = {prompt_id: rank for rank, prompt_id in enumerate(ids)}
    return {
        position[r["prompt_id"]]: (r.get("p_a_forward"), r.get("p_a_swapped"))
        for r in client.results(job_id)
    }


def machine() -> dict[str, Any]:
    cpu = ""
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform_module.python_version(),
        "commit": commit,
        "loadavg": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--job", default="compare", choices=["compare", "rl_cai", "sl_cai"])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--engine", choices=["transformers", "scripted"], default="transformers")
    parser.add_argument("--model-dir", type=Path, default=None, help="default: SmolLM2")
    parser.add_argument("--chunk-size", type=int, default=None, help="default: settings")
    parser.add_argument("--max-batch", type=int, default=None, help="default: settings")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="default: settings")
    parser.add_argument("--few-shot", action="store_true", help="show the worked examples")
    parser.add_argument("--rounds", type=int, default=1, help="sl_cai rounds")
    parser.add_argument("--max-tokens", type=int, default=32, help="generated tokens")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, every side")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip", nargs="*", default=[], choices=["engine", "plain", "platform"])
    parser.add_argument("--database-url", default=None, help="default: embedded SQLite")
    parser.add_argument("--broker-url", default=None, help="default: filesystem broker")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--warm-jobs", type=int, default=2, help="warm jobs after the cold one")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between job polls")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from charter.settings import Settings

    defaults = Settings()
    args.chunk_size = args.chunk_size or defaults.chunk_size
    args.max_batch = args.max_batch or defaults.worker_max_batch
    args.max_batch_tokens = args.max_batch_tokens or defaults.worker_max_batch_tokens
    if args.model_dir is None and args.engine == "transformers":
        from charter.model_store import prepare_smollm2

        args.model_dir = prepare_smollm2(defaults.models_dir / "smollm2")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    data = rows(args.data, args.pairs, args.job)
    params: dict[str, Any] = {
        "swap": True,
        "few_shot": args.few_shot,
        "rounds": args.rounds,
        "sampling": {"max_tokens": args.max_tokens},
    }
    work = items(data)
    recorder = Recorder()
    run_chunks(recorder, args, work, params)  # the exact feedback prompts, for (b) and counts
    result: dict[str, Any] = {
        "job": args.job,
        "items": len(data),
        "feedback_prompts": len(recorder.scored),
        "chunk_size": args.chunk_size,
        "max_batch": args.max_batch,
        "max_batch_tokens": args.max_batch_tokens,
        "few_shot": args.few_shot,
        "threads": args.threads,
        "engine": args.engine,
        "database": args.database_url or "sqlite",
        "broker": args.broker_url or "filesystem",
        "machine": machine(),
    }
    plain_ok = args.job == "compare" and args.model_dir is not None and "plain" not in args.skip
    if args.model_dir is not None and recorder.scored:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.model_dir)
        lengths = [
            len(
                tok(
                    tok.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False)
                    + prefix,
                    add_special_tokens=False,
                ).input_ids
            )
            for c, prefix in recorder.scored
        ]
        result["prompt_tokens"] = sum(lengths)
        result["prompt_tokens_range"] = [min(lengths), max(lengths)]

    engine = load_engine(args) if "engine" not in args.skip else None
    passes: dict[str, list[dict]] = {"engine": [], "plain": []}

    def raw_passes() -> None:
        if engine is not None:
            passes["engine"].append(engine_pass(engine, args, work, params))
        if plain_ok:
            passes["plain"].append(plain_pass(args.model_dir, recorder.scored))

    # In-process passes before the platform and after each warm job: each warm job sits
    # between two of them, so a shared machine's load drift hits both sides alike.
    raw_passes()
    if "platform" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            result["platform"] = platform_pass(args, data, params, Path(tmp), raw_passes)
    else:
        raw_passes()

    def rates(seconds: float, cpu: float | None = None) -> dict[str, float]:
        out = {"seconds": round(seconds, 2), "labels_per_s": round(len(data) / seconds, 4)}
        if cpu is not None:
            out["cpu_seconds"] = round(cpu, 2)
        if "prompt_tokens" in result and args.job == "compare":
            out["prompt_tokens_per_s"] = round(result["prompt_tokens"] / seconds, 1)
        return out

    summary: dict[str, Any] = {}
    for side, runs in passes.items():
        if runs:
            mean = sum(r["seconds"] for r in runs) / len(runs)
            cpu = sum(r["cpu_seconds"] for r in runs) / len(runs)
            summary[side] = rates(mean, cpu) | {"passes": [round(r["seconds"], 2) for r in runs]}
    platform_result = result.pop("platform", None)
    if platform_result:
        summary["platform_cold"] = rates(platform_result["cold"]["seconds"])
        warm = [v for k, v in platform_result.items() if k.startswith("warm")]

        def mean(key: str) -> float:
            return sum(w[key] for w in warm) / len(warm)

        cpu = mean("worker_cpu_seconds") + mean("gateway_cpu_seconds")
        summary["platform_warm"] = rates(mean("seconds"), cpu) | {
            "passes": [round(w["seconds"], 2) for w in warm],
            # Where a warm job's time went: inside the worker's pipelines (engine calls,
            # prompt building) and outside them (submission, broker, claims, label
            # writes, seeing completion), and whose CPU it was.
            "pipeline_seconds": round(mean("pipeline_seconds"), 2),
            "outside_pipeline_seconds": round(mean("seconds") - mean("pipeline_seconds"), 2),
            "worker_cpu_seconds": round(mean("worker_cpu_seconds"), 2),
            "gateway_cpu_seconds": round(mean("gateway_cpu_seconds"), 2),
        }
    if passes["engine"] and passes["plain"]:
        # Batch-1 parity: every label's p_A, both orders, from the engine vs the loop.
        logprobs = passes["plain"][0]["logprobs"]
        diffs = []
        for item_id, (forward, swapped) in passes["engine"][-1]["p_a"].items():
            chunk_start = item_id // args.chunk_size * args.chunk_size
            n = min(args.chunk_size, len(work) - chunk_start)
            k = item_id - chunk_start
            f = logprobs[2 * chunk_start + k]
            s = logprobs[2 * chunk_start + n + k]
            diffs += [abs(forward - p_a(*f)), abs(swapped - (1 - p_a(*s)))]
        summary["max_abs_p_a_diff_engine_vs_plain"] = max(diffs)
    if platform_result and passes["engine"] and platform_result["p_a"]:
        engine_p = passes["engine"][-1]["p_a"]
        summary["max_abs_p_a_diff_platform_vs_engine"] = max(
            max(abs((pf or 0) - (engine_p[i][0] or 0)), abs((ps or 0) - (engine_p[i][1] or 0)))
            for i, (pf, ps) in platform_result["p_a"].items()
        )
    best = [summary[s]["labels_per_s"] for s in ("engine", "plain") if s in summary]
    if best and "platform_warm" in summary:
        summary["platform_warm_over_best"] = round(
            summary["platform_warm"]["labels_per_s"] / max(best), 3
        )
    best_cpu = [summary[s]["cpu_seconds"] for s in ("engine", "plain") if s in summary]
    if best_cpu and "cpu_seconds" in summary.get("platform_warm", {}):
        # The same ratio in CPU seconds, which a shared machine's load drift moves far less.
        summary["platform_warm_over_best_cpu"] = round(
            min(best_cpu) / summary["platform_warm"]["cpu_seconds"], 3
        )
    if passes["engine"] and passes["plain"]:
        summary["engine_over_plain"] = round(
            summary["engine"]["labels_per_s"] / summary["plain"]["labels_per_s"], 3
        )
    result["results"] = summary
    result["machine"]["loadavg_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
