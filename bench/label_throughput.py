"""Labels/s of the platform against the engine and against a plain transformers loop, in ONE run.

On the same rows (bench/data/hhh_pairs.jsonl: 40 public HHH pairs; ``compare`` uses
both responses, ``sl_cai`` and ``rl_cai`` the prompts only):

(a) ``engine``: Charter's pipelines called in-process on a loaded TransformersEngine,
    chunk by chunk, exactly as a worker runs a chunk;
(b) ``plain``: the batch-1 loop a user would write without Charter: for ``compare``
    one forward per feedback prompt reading the A/B log-probs; for ``sl_cai`` and
    ``rl_cai`` the loop of ``bench/label_plain.py`` (model.generate per response,
    critique, revision or reasoning, one forward per A/B read);
(c) ``platform``: the embedded stack (gateway over HTTP, SQLite or PostgreSQL, the
    filesystem or Redis broker, a real Celery worker process, the sweeper), timed from
    submission to completion: ``cold`` is the first job on a fresh worker (the clock
    starts before the worker process, so it includes the model load), ``warm`` the
    same job submitted again to the loaded worker.

(a) and (b) run before (c) and after each of its warm jobs (``--plain-passes`` limits
(b) to the first brackets), and their means are compared with (c)'s, so drift of a
shared machine's load hits every side alike. For ``compare`` (b) also checks that the
engine's p_A equals batch-1's on every label; for every job the platform's labels are
checked against the engine's (same seeds, same chunks: the same text and p_A).

    python bench/label_throughput.py --job sl_cai --pairs 8 --rounds 4 --max-tokens 48
    python bench/label_throughput.py --job rl_cai --pairs 8 --chain-of-thought --no-swap \\
        --stack postgres_redis
    python bench/label_throughput.py --plot bench/results/label_throughput_*.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: import the repository
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

DATA = ROOT / "bench" / "data" / "hhh_pairs.jsonl"
RESULTS = ROOT / "bench" / "results"
MODEL_NAME = "bench-model"
REDIS_URL = "redis://127.0.0.1:6379/11"
LABEL_FIELDS = ("completion", "response_a", "response_b", "p_a_forward", "p_a_swapped")
"""What must be equal between the platform's labels and the in-process engine's."""


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
    from charter.core import pipelines

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
    from charter.core import pipelines
    from charter.core.jobs import JobParams, JobType

    rules = constitution()
    job_params = JobParams.model_validate(params)
    outcomes = []
    for start in range(0, len(work), args.chunk_size):
        ctx = pipelines.Context(engine, rules, job_params, args.seed, pipelines.Timer())
        chunk = work[start : start + args.chunk_size]
        outcomes += pipelines.run(ctx, JobType(args.job), chunk, start // args.chunk_size)
    return outcomes


def constitution() -> Any:
    from charter.core.constitution import Constitution

    return Constitution.model_validate(
        yaml.safe_load((ROOT / "constitutions" / "default.yaml").read_text())
    )


class Counted:
    """An engine that keeps every prompt it is given, to count tokens after a timed pass."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.engine_name, self.model_name = inner.engine_name, inner.model_name
        self.model_revision, self.special_tokens = inner.model_revision, inner.special_tokens
        self.prompts: list[tuple[Any, str]] = []
        self.outputs: list[str] = []

    def generate(self, conversations: Any, params: Any, *, seed: Any = None) -> list[str]:
        out = self.inner.generate(conversations, params, seed=seed)
        self.prompts += [(c, "") for c in conversations]
        self.outputs += out
        return out

    def choice_logprobs(self, conversations: Any, prefixes: Any, choices: Any = ("A", "B")) -> Any:
        self.prompts += list(zip(conversations, prefixes, strict=True))
        return self.inner.choice_logprobs(conversations, prefixes, choices)

    def counts(self) -> dict[str, int]:
        """Model calls' prompts (one per generated or scored row) and generated tokens."""
        encode = getattr(self.inner, "encode_prompt", None)
        if encode is None:  # the scripted engine has no tokenizer
            return {"calls": len(self.prompts)}
        return {
            "calls": len(self.prompts),
            "prompt_tokens": sum(len(encode(c, suffix=s)) for c, s in self.prompts),
            "generated_tokens": sum(len(encode_text(self.inner, o)) for o in self.outputs),
        }


def encode_text(engine: Any, text: str) -> list[int]:
    return list(engine.tokenizer(text, add_special_tokens=False).input_ids)


def item_labels(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: fields.get(k) for k in LABEL_FIELDS}


def engine_pass(engine: Any, args: argparse.Namespace, work: list[Any], params: dict) -> dict:
    counted = Counted(engine)
    start, cpu = time.perf_counter(), time.process_time()
    outcomes = run_chunks(counted, args, work, params)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert len(outcomes) == len(work)
    labels = {o.item.item_id: item_labels(o.fields) for o in outcomes}
    return {"seconds": seconds, "cpu_seconds": cpu, "labels": labels} | counted.counts()


class Recorder:
    """A scripted engine that keeps what the pipelines ask it to score."""

    def __init__(self) -> None:
        from workers.engines.scripted import ScriptedEngine

        self.inner = ScriptedEngine(model_name=MODEL_NAME)
        self.engine_name, self.model_name = "recorder", MODEL_NAME
        self.model_revision, self.special_tokens = "recorder", self.inner.special_tokens
        self.scored: list[tuple[Any, str]] = []

    def generate(self, conversations: Any, params: Any, *, seed: Any = None) -> list[str]:
        return self.inner.generate(conversations, params, seed=seed)

    def choice_logprobs(self, conversations: Any, prefixes: Any, choices: Any = ("A", "B")) -> Any:
        self.scored += list(zip(conversations, prefixes, strict=True))
        return self.inner.choice_logprobs(conversations, prefixes, choices)


def load_engine(args: argparse.Namespace) -> Any:
    if args.engine == "scripted":
        from workers.engines.scripted import ScriptedEngine

        return ScriptedEngine(model_name=MODEL_NAME)
    from charter.core.engine_config import EngineConfig
    from workers.engines.transformers_engine import TransformersEngine

    config = EngineConfig(
        max_batch_size=args.max_batch, max_batch_tokens=args.max_batch_tokens, threads=args.threads
    )
    return TransformersEngine(args.model_dir, model_name=MODEL_NAME, config=config)


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
    from charter.key_issuing import ensure_project, issue_key
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
                common.log(f"platform {phase}: {seconds:.1f} s")
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
            out["labels"] = job_labels(client, out[phases[-1]]["job_id"])
        finally:
            stop_process(worker)
    return out


def job_breakdown(client: Any, job_id: str) -> dict[str, float]:
    """Time inside the worker's pipelines, from the timings every label carries
    (one entry per chunk: all labels of a chunk carry the same timings)."""
    labels = list(client.results(job_id))
    chunks = {json.dumps(r["timings"], sort_keys=True): r["timings"] for r in labels}
    return {"pipeline_seconds": sum(t.get("total", 0.0) for t in chunks.values())}


def job_labels(client: Any, job_id: str) -> dict[int, dict[str, Any]]:
    """The label fields by item position (prompt ids follow the batch's row order)."""
    ids = sorted(i["prompt_id"] for i in client.items(job_id))
    position = {prompt_id: rank for rank, prompt_id in enumerate(ids)}
    return {position[r["prompt_id"]]: item_labels(r) for r in client.results(job_id)}


def job_tag(args: argparse.Namespace) -> str:
    """The job and the knobs that change its work, as in the results file names."""
    if args.job == "sl_cai":
        return f"sl_cai_r{args.rounds}"
    if args.job == "rl_cai":
        return (
            "rl_cai" + ("_cot" if args.chain_of_thought else "") + ("" if args.swap else "_noswap")
        )
    return args.job


def parse_args() -> argparse.Namespace:
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
    parser.add_argument("--chain-of-thought", action="store_true", help="rl_cai: reason first")
    parser.add_argument("--no-swap", dest="swap", action="store_false", help="one A/B order")
    parser.add_argument("--max-tokens", type=int, default=48, help="generated tokens")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, every side")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--skip", nargs="*", default=[], choices=["engine", "plain", "platform"])
    parser.add_argument(
        "--stack",
        choices=["sqlite", "postgres_redis"],
        default="sqlite",
        help="sqlite: embedded SQLite + filesystem broker; postgres_redis: a scratch "
        f"PostgreSQL database ({common.DEFAULT_SERVER}) + {REDIS_URL}",
    )
    parser.add_argument("--database-url", default=None, help="overrides --stack's database")
    parser.add_argument("--broker-url", default=None, help="overrides --stack's broker")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--warm-jobs", type=int, default=2, help="warm jobs after the cold one")
    parser.add_argument(
        "--plain-passes", type=int, default=None, help="plain passes (default: every bracket)"
    )
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between job polls")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/...")
    parser.add_argument(
        "--plot", type=Path, nargs="+", default=None, help="only plot these results (SVG)"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.plot:
        plot_results(args.plot, args.out or RESULTS / "label_throughput.svg")
        return
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
    out = args.out or RESULTS / f"label_throughput_{job_tag(args)}_{args.stack}.json"
    postgres = args.stack == "postgres_redis" and args.database_url is None
    with common.scratch_database() if postgres else nullcontext(args.database_url) as url:
        args.database_url = url
        if args.stack == "postgres_redis":
            args.broker_url = args.broker_url or REDIS_URL
        result = measure(args)
    common.write_result(out, result)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from charter.core.jobs import JobParams

    data = rows(args.data, args.pairs, args.job)
    params: dict[str, Any] = {
        "swap": args.swap,
        "chain_of_thought": args.chain_of_thought,
        "few_shot": args.few_shot,
        "rounds": args.rounds,
        "sampling": {"max_tokens": args.max_tokens},
    }
    job_params = JobParams.model_validate(params)
    work = items(data)
    recorder = Recorder()
    run_chunks(recorder, args, work, params)  # the exact feedback prompts, for (b) and counts
    result: dict[str, Any] = {
        "job": args.job,
        "tag": job_tag(args),
        "items": len(data),
        "feedback_prompts": len(recorder.scored),
        "params": job_params.model_dump(mode="json"),
        "chunk_size": args.chunk_size,
        "max_batch": args.max_batch,
        "max_batch_tokens": args.max_batch_tokens,
        "threads": args.threads,
        "engine": args.engine,
        "stack": args.stack,
        "database": "postgresql" if args.database_url else "sqlite",
        "broker": args.broker_url.split(":", 1)[0] if args.broker_url else "filesystem",
        "machine": common.machine() | {"commit": commit()},
    }
    compare = args.job == "compare"
    plain_on = args.model_dir is not None and "plain" not in args.skip
    if compare and args.model_dir is not None and recorder.scored:
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
    plain_limit = math.inf if args.plain_passes is None else args.plain_passes

    def raw_passes() -> None:
        if engine is not None:
            passes["engine"].append(engine_pass(engine, args, work, params))
            common.log(f"engine pass: {passes['engine'][-1]['seconds']:.1f} s")
        if plain_on and len(passes["plain"]) < plain_limit:
            if compare:
                passes["plain"].append(plain_pass(args.model_dir, recorder.scored))
            else:
                from bench.label_plain import plain_generation_pass

                prompts_ = [r["prompt"] for r in data]
                passes["plain"].append(
                    plain_generation_pass(
                        args.model_dir, args.job, job_params, constitution(), prompts_, args.seed
                    )
                )
            common.log(f"plain pass: {passes['plain'][-1]['seconds']:.1f} s")

    # In-process passes before the platform and after each warm job: each warm job sits
    # between two of them, so a shared machine's load drift hits both sides alike.
    raw_passes()
    platform_result = None
    if "platform" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            platform_result = platform_pass(args, data, params, Path(tmp), raw_passes)
    else:
        raw_passes()
    result["results"] = summarise(args, result, passes, platform_result, len(work))
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return result


def summarise(
    args: argparse.Namespace,
    result: dict[str, Any],
    passes: dict[str, list[dict]],
    platform_result: dict[str, Any] | None,
    n_items: int,
) -> dict[str, Any]:
    # Prompt tokens each side read: compare's are fixed; a generation job's depend on
    # the text generated, so each side counts its own (the platform's are the engine's:
    # its labels are checked equal below).
    tokens: dict[str, Any] = {s: result.get("prompt_tokens") for s in ("engine", "plain")}
    for side, runs in passes.items():
        if runs and "prompt_tokens" in runs[-1]:
            tokens[side] = runs[-1]["prompt_tokens"]

    def rates(seconds: float, cpu: float | None, side_tokens: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seconds": round(seconds, 2),
            "labels_per_s": round(n_items / seconds, 4),
            "seconds_per_label": round(seconds / n_items, 3),
        }
        if cpu is not None:
            out["cpu_seconds"] = round(cpu, 2)
        if side_tokens:
            out["prompt_tokens_per_s"] = round(side_tokens / seconds, 1)
        return out

    summary: dict[str, Any] = {}
    for side, runs in passes.items():
        if runs:
            mean = sum(r["seconds"] for r in runs) / len(runs)
            cpu = sum(r["cpu_seconds"] for r in runs) / len(runs)
            summary[side] = rates(mean, cpu, tokens[side]) | {
                "passes": [round(r["seconds"], 2) for r in runs]
            }
            for key in ("calls", "prompt_tokens", "generated_tokens"):
                if key in runs[-1]:
                    summary[side][key] = runs[-1][key]
    if platform_result:
        summary["platform_cold"] = rates(platform_result["cold"]["seconds"], None, tokens["engine"])
        warm = [v for k, v in platform_result.items() if k.startswith("warm")]

        def mean(key: str) -> float:
            return sum(w[key] for w in warm) / len(warm)

        cpu = mean("worker_cpu_seconds") + mean("gateway_cpu_seconds")
        summary["platform_warm"] = rates(mean("seconds"), cpu, tokens["engine"]) | {
            "passes": [round(w["seconds"], 2) for w in warm],
            # Where a warm job's time went: inside the worker's pipelines (engine calls,
            # prompt building) and outside them (submission, broker, claims, label
            # writes, seeing completion), and whose CPU it was.
            "pipeline_seconds": round(mean("pipeline_seconds"), 2),
            "outside_pipeline_seconds": round(mean("seconds") - mean("pipeline_seconds"), 2),
            "worker_cpu_seconds": round(mean("worker_cpu_seconds"), 2),
            "gateway_cpu_seconds": round(mean("gateway_cpu_seconds"), 2),
        }
    if passes["engine"] and passes["plain"] and args.job == "compare":
        summary["max_abs_p_a_diff_engine_vs_plain"] = batch1_parity(args, passes, n_items)
    if platform_result and passes["engine"]:
        summary |= label_agreement(passes["engine"][-1]["labels"], platform_result["labels"])
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
        # Lockstep: each plain pass against the engine pass just before it.
        pairs = zip(passes["engine"], passes["plain"], strict=False)
        summary["engine_over_plain"] = round(
            sum(p["seconds"] / e["seconds"] for e, p in pairs) / len(passes["plain"]), 3
        )
        summary["engine_over_plain_cpu"] = round(
            summary["plain"]["cpu_seconds"] / summary["engine"]["cpu_seconds"], 3
        )
    return summary


def batch1_parity(args: argparse.Namespace, passes: dict[str, list[dict]], n_items: int) -> float:
    """The largest |p_A| difference, both orders, between the engine and the batch-1 loop."""
    logprobs = passes["plain"][0]["logprobs"]
    diffs = []
    for item_id, labels in passes["engine"][-1]["labels"].items():
        chunk_start = item_id // args.chunk_size * args.chunk_size
        n = min(args.chunk_size, n_items - chunk_start)
        k = item_id - chunk_start
        f = logprobs[2 * chunk_start + k]
        s = logprobs[2 * chunk_start + n + k]
        diffs += [
            abs(labels["p_a_forward"] - p_a(*f)),
            abs(labels["p_a_swapped"] - (1 - p_a(*s))),
        ]
    return max(diffs)


def label_agreement(engine: dict[int, dict], platform: dict[int, dict]) -> dict[str, Any]:
    """Whether the worker wrote the in-process engine's labels: texts equal, p_A close
    (items that abstained have no label row and are not compared)."""
    texts = ("completion", "response_a", "response_b")
    same = all(engine[i][k] == row[k] for i, row in platform.items() for k in texts)
    numbers = [
        abs(row[k] - engine[i][k])
        for i, row in platform.items()
        for k in ("p_a_forward", "p_a_swapped")
        if row[k] is not None and engine[i][k] is not None
    ]
    out: dict[str, Any] = {"platform_labels": len(platform), "platform_texts_equal_engine": same}
    if numbers:
        out["max_abs_p_a_diff_platform_vs_engine"] = max(numbers)
    return out


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()


def plot_results(paths: list[Path], out: Path) -> None:
    """CPU seconds per label against model calls per item (sl_cai rounds, rl_cai variants).

    CPU seconds, not wall: on a loaded machine the kernel's autogroup scheduling gives the
    worker (its own session) a different share of the cores than the bench process.
    """
    series: dict[str, list[tuple[float, float]]] = {}
    for path in paths:
        result = json.loads(path.read_text())
        summary = result["results"]
        calls = summary.get("engine", {}).get("calls")
        if not calls:
            continue
        x = calls / result["items"]
        for side in ("engine", "plain", "platform_warm"):
            if "cpu_seconds" in summary.get(side, {}):
                series.setdefault(f"{side} ({result['stack']})", []).append(
                    (x, summary[side]["cpu_seconds"] / result["items"])
                )
    common.plot(
        out,
        series,
        title="Labelling cost on a 2-core CPU (SmolLM2-135M, 1 thread)",
        xlabel="model calls per item (generations + A/B reads)",
        ylabel="CPU seconds per label",
        logx=False,
    )
    common.log(f"wrote {out}")


if __name__ == "__main__":
    main()
