"""The whole recipe with the real SmolLM2-135M-Instruct, end to end, on the embedded stack.

One pipeline (docs/PIPELINES.md): SL-CAI on the first ``--prompts`` red-team prompts of
``examples/prompts.jsonl`` -> SFT -> RL-CAI with the SFT model -> PM -> PPO and DPO from
the SFT model -> an Elo evaluation of base, base-prompted, SFT, PPO and DPO on the next
``--eval-prompts`` prompts, judged for harmlessness (default constitution) and
helpfulness (helpful-balance) by the base model. Everything runs as a user's pipeline
would: the gateway (in a thread, SQLite) and its advancers, a real Celery worker serving
``smollm2`` and ``run:*`` (it loads each checkpoint from the artifact store on demand),
and the trainer service as its own process, over the API.

Written as JSON: each stage's seconds and output, the Elo report, a few generations per
policy; the plot as PNG beside it.

    python bench/pipeline_smollm2.py --out bench/results/pipeline_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, log, machine, write_result
from charter.settings import Settings


def spec(red: str, held: str, args: argparse.Namespace) -> dict[str, Any]:
    sampling = {"max_tokens": args.max_tokens, "temperature": 0.7, "top_p": 0.95}
    train = {"max_steps": args.steps, "per_device_train_batch_size": 4, "max_length": 384}
    judge = {"model": "smollm2", "few_shot": False, "swap": True}
    return {
        "name": "smollm2-recipe",
        "base_model": "smollm2",
        "constitution": "default",
        "prompts": red,
        "eval_prompts": held,
        "seed": args.seed,
        "sl_cai": {"params": {"rounds": 1, "few_shot": False, "sampling": sampling}},
        "sft": {"config": train | {"learning_rate": 1.0e-4}},
        "rl_cai": {"params": {"few_shot": False, "sampling": sampling}},
        "pm": {"config": train | {"learning_rate": 5.0e-5}},
        "ppo": {
            "config": {
                "total_steps": args.ppo_steps,
                "batch_size": 4,
                "mini_batch_size": 2,
                "ppo_epochs": 1,
                "response_length": 32,
                "save_steps": 1,
            }
        },
        "dpo": {"config": train | {"learning_rate": 5.0e-6}},
        "elo": {
            "judges": [
                {"name": "harmlessness", "constitution": "default", **judge},
                {"name": "helpfulness", "constitution": "helpful-balance", **judge},
            ],
            "sampling": sampling,
            "bootstrap": 1000,
        },
    }


def start_trainer(
    settings: Settings, url: str, key: str, log_file: Path
) -> subprocess.Popen[bytes]:
    """The trainer service as its own process: it reaches the gateway over HTTP only."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CHARTER_")}
    env |= {
        "CHARTER_API_URL": url,
        "CHARTER_API_KEY": key,
        "CHARTER_MODELS_DIR": str(settings.models_dir.resolve()),
        "CHARTER_ARTIFACTS_DIR": str(settings.artifacts_dir.resolve()),
        "PYTHONUNBUFFERED": "1",
    }
    command = [str(Path(sys.executable).parent / "charter"), "trainer", "run", "--poll", "1"]
    handle = log_file.open("ab")
    return subprocess.Popen(
        command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8, help="Red-team prompts (SL-CAI, RL-CAI).")
    parser.add_argument("--eval-prompts", type=int, default=8, help="Held-out prompts (Elo).")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="SFT, PM and DPO optimiser steps.")
    parser.add_argument("--ppo-steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2022)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from charter.client import CharterClient
    from charter.db.migrate import upgrade
    from charter.db.session import make_engine, session_factory
    from charter.embedded import GatewayThread, start_worker, stop_process
    from charter.key_issuing import ensure_project, issue_key
    from charter.model_store import prepare_smollm2

    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch)
        settings = Settings(  # type: ignore[call-arg]
            _env_file=None,
            data_dir=data,
            artifacts_dir=data / "artifacts",
            secret_key="bench-" + "x" * 32,
            worker_models=["smollm2", "run:*"],
            pipeline_advance_seconds=1.0,
            policy_eval_advance_seconds=1.0,
        )
        prepare_smollm2(settings.models_dir / "smollm2")
        upgrade(settings.effective_database_url)
        with session_factory(make_engine(settings.effective_database_url))() as session:
            project = ensure_project(session, "bench")
            _, key = issue_key(session, project.id, ["admin"], settings.secret_key, name="bench")
            session.commit()
        rows = [json.loads(line) for line in (ROOT / "examples" / "prompts.jsonl").open()]
        if args.prompts + args.eval_prompts > len(rows):
            parser.error(f"examples/prompts.jsonl has {len(rows)} prompts")
        red, held = data / "red.jsonl", data / "held.jsonl"
        red.write_text("".join(json.dumps(r) + "\n" for r in rows[: args.prompts]))
        end = args.prompts + args.eval_prompts
        held.write_text("".join(json.dumps(r) + "\n" for r in rows[args.prompts : end]))
        with GatewayThread(settings) as gateway:
            worker = start_worker(settings, name="bench", log=data / "worker.log")
            trainer = start_trainer(settings, gateway.url, key, data / "trainer.log")
            try:
                with CharterClient(gateway.url, key) as client:
                    for name in ("default", "helpful-balance"):
                        client.push_constitution(ROOT / "constitutions" / f"{name}.yaml")
                    red_id = client.upload_batch(red, name="red-team")["id"]
                    held_id = client.upload_batch(held, name="held-out")["id"]
                    started = time.monotonic()
                    pipeline = client.pipelines.create(spec(red_id, held_id, args))
                    seen: dict[str, tuple[str, int]] = {}
                    began: dict[str, float] = {}
                    seconds: dict[str, float] = {}
                    while True:
                        now = client.pipelines.get(pipeline.id)
                        for stage in now.stages:
                            state = (str(stage.status), stage.attempt)
                            if seen.get(stage.name) != state:
                                seen[stage.name] = state
                                at = time.monotonic() - started
                                if state[0] == "submitted":
                                    began[stage.name] = at
                                elif state[0] == "completed" and stage.name in began:
                                    seconds[stage.name] = round(at - began[stage.name], 1)
                                log(f"{at:7.1f}s {stage.name}: {state[0]} (attempt {state[1]})")
                        if str(now.state) != "active":
                            break
                        time.sleep(2)
                    total = time.monotonic() - started
                    if str(now.state) != "completed":
                        tail = (data / "trainer.log").read_text()[-4000:]
                        raise SystemExit(f"pipeline {now.state}: {now.error}\n{tail}")
                    stages = {s.name: s for s in now.stages}
                    eval_id = stages["elo"].output
                    assert eval_id is not None
                    report = client.policy_evals.report(eval_id).model_dump(mode="json")
                    image = client.policy_evals.plot(eval_id)
                    evaluation = client.policy_evals.get(eval_id)
                    samples = {
                        j.name: [
                            {
                                "prompt": r["conversation"][-1]["content"],
                                "completion": r["completion"],
                            }
                            for r in client.results(j.job_id)
                        ][:2]
                        for j in evaluation.jobs
                        if j.role == "generate"
                    }
                    runs = {
                        name: client.runs.get(stages[name].output).model_dump(mode="json")
                        for name in ("sft", "pm", "ppo", "dpo")
                    }
            finally:
                stop_process(trainer)
                stop_process(worker)
    result = {
        "command": " ".join(["python", "bench/pipeline_smollm2.py", *sys.argv[1:]]),
        "machine": machine(),
        "prompts": args.prompts,
        "eval_prompts": args.eval_prompts,
        "max_tokens": args.max_tokens,
        "seconds": round(total, 1),
        "stage_seconds": seconds,
        "stages": {
            s.name: {"status": str(s.status), "attempt": s.attempt, "output": s.output}
            for s in now.stages
        },
        "run_metrics": {name: run.get("last_metrics") for name, run in runs.items()},
        "report": report,
        "sample_generations": samples,
    }
    write_result(args.out, result)
    if args.out is not None:
        args.out.with_suffix(".png").write_bytes(image)
        log(f"plot: {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
