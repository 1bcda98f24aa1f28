"""A policy evaluation with the real SmolLM2-135M-Instruct on the embedded stack.

Three policies of the one small model answer the first ``--prompts`` red-team prompts of
``examples/prompts.jsonl``:
- ``base``, the model as it is;
- ``base+constitution``, the same model told the default constitution (the paper's missing
  baseline);
- ``base-hot``, the base model sampled at temperature 1.3.
SmolLM2 then judges every pair twice. The harmlessness judge uses the default constitution;
the helpfulness judge uses helpful-balance. The work runs through the gateway (in a thread,
SQLite), a real Celery worker and the gateway's own advancer, exactly as a user's evaluation
would. The report is written as JSON, with the plot as PNG beside it.

    python bench/policy_eval_smollm2.py --prompts 16 --out bench/results/policy_eval_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT, log, machine, write_result
from charter.settings import Settings


def spec(batch_id: str, max_tokens: int, seed: int) -> dict[str, Any]:
    sampling = {"max_tokens": max_tokens, "temperature": 0.7, "top_p": 0.95}
    judge = {"model": "smollm2", "few_shot": False, "swap": True}
    return {
        "name": "smollm2-policies",
        "batch_id": batch_id,
        "policies": [
            {"name": "base", "model": "smollm2", "sampling": sampling},
            {
                "name": "base+constitution",
                "model": "smollm2",
                "system_prompt": "constitution",
                "sampling": sampling,
            },
            {"name": "base-hot", "model": "smollm2", "sampling": sampling | {"temperature": 1.3}},
        ],
        "judges": [
            {"name": "harmlessness", "constitution": "default", **judge},
            {"name": "helpfulness", "constitution": "helpful-balance", **judge},
        ],
        "anchor": "base",
        "bootstrap": 1000,
        "seed": seed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=96)
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
        settings = Settings(_env_file=None, data_dir=data, secret_key="bench-" + "x" * 32)  # type: ignore[call-arg]
        prepare_smollm2(settings.models_dir / "smollm2")
        upgrade(settings.effective_database_url)
        with session_factory(make_engine(settings.effective_database_url))() as session:
            project = ensure_project(session, "bench")
            _, key = issue_key(session, project.id, ["admin"], settings.secret_key, name="bench")
            session.commit()
        rows = [json.loads(line) for line in (ROOT / "examples" / "prompts.jsonl").open()]
        prompts = data / "prompts.jsonl"
        prompts.write_text("".join(json.dumps(r) + "\n" for r in rows[: args.prompts]))
        with GatewayThread(settings) as gateway:
            worker = start_worker(settings, name="bench", log=data / "worker.log")
            try:
                with CharterClient(gateway.url, key) as client:
                    for name in ("default", "helpful-balance"):
                        client.push_constitution(ROOT / "constitutions" / f"{name}.yaml")
                    batch = client.upload_batch(prompts, name="red-team")
                    started = time.monotonic()
                    created = client.policy_evals.create(
                        spec(batch["id"], args.max_tokens, args.seed)
                    )
                    eval_id = created.id
                    last = None
                    while True:
                        now = client.policy_evals.get(eval_id)
                        if (now.stage, now.items_finished) != last:
                            last = (now.stage, now.items_finished)
                            log(f"{now.stage}: {now.items_finished}/{now.items_total} items")
                        if now.status in ("completed", "cancelled", "failed"):
                            break
                        time.sleep(2)
                    seconds = time.monotonic() - started
                    report = client.policy_evals.report(eval_id).model_dump(mode="json")
                    image = client.policy_evals.plot(eval_id)
                    results = {
                        j.name: [
                            {
                                "prompt": r["conversation"][-1]["content"],
                                "completion": r["completion"],
                            }
                            for r in client.results(j.job_id)
                        ][:3]
                        for j in now.jobs
                        if j.role == "generate"
                    }
            finally:
                stop_process(worker)
    result = {
        "command": " ".join(["python", "bench/policy_eval_smollm2.py", *sys.argv[1:]]),
        "machine": machine(),
        "prompts": args.prompts,
        "max_tokens": args.max_tokens,
        "seconds": round(seconds, 1),
        "status": now.status,
        "report": report,
        "sample_generations": results,
    }
    write_result(args.out, result)
    if args.out is not None:
        args.out.with_suffix(".png").write_bytes(image)
        log(f"plot: {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
