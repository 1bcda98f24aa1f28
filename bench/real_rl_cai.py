"""A short real RL-CAI run, all through the API: SmolLM2 labels its own samples (RL-CAI),
the labels are frozen into a dataset version, a SmolLM2 preference model is trained on them
with the soft loss, and PPO trains SmolLM2 against that PM with a KL penalty to SmolLM2.

    python bench/real_rl_cai.py --prompts 16 --pm-steps 8 --ppo-steps 3 --out real.json

Embedded stack (SQLite, filesystem broker, a real worker process); the trainer service runs
in this process and talks to the gateway over HTTP only.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--pm-steps", type=int, default=8)
    parser.add_argument("--ppo-steps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from charter.client import CharterClient
    from charter.db.migrate import upgrade
    from charter.db.session import make_engine, session_factory
    from charter.embedded import GatewayThread, start_worker, stop_process, sweeper_thread
    from charter.key_issuing import ensure_project, issue_key
    from charter.settings import Settings
    from services.trainer.daemon import TrainerService

    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = Settings(data_dir=work, artifacts_dir=work / "artifacts", worker_max_batch=16)
        upgrade(settings.effective_database_url)
        with session_factory(make_engine(settings.effective_database_url))() as session:
            project = ensure_project(session, "real-run")
            _, key = issue_key(session, project.id, ["admin"], settings.secret_key)
            session.commit()
        sample = work / "prompts.jsonl"
        lines = [
            line
            for line in (ROOT / "examples" / "prompts.jsonl").read_text().splitlines()
            if line.strip()
        ]
        sample.write_text("\n".join(lines[: args.prompts]) + "\n")
        with (
            GatewayThread(settings) as gateway,
            sweeper_thread(settings),
            CharterClient(gateway.url, key) as client,
        ):
            worker = start_worker(settings, name="real", log=work / "worker.log")
            try:
                ref = client.push_constitution(ROOT / "constitutions" / "default.yaml")["ref"]
                batch = client.upload_batch(sample, name="real")
                started = time.monotonic()
                job = client.submit_job(
                    type="rl_cai",
                    batch_id=batch["id"],
                    constitution=ref,
                    model="smollm2",
                    seed=7,
                    params={
                        "swap": True,
                        "min_choice_mass": 0.3,
                        "sampling": {"max_tokens": args.max_tokens, "temperature": 1.0},
                    },
                )
                job = client.wait(job["id"], poll=1.0)
                report["labelling"] = {
                    "seconds": round(time.monotonic() - started, 1),
                    "counts": job["counts"],
                }
            finally:
                stop_process(worker)
            dataset = client.create_dataset(  # waits until the version is frozen (ready)
                "real-prefs", "preference", {"job_ids": [job["id"]]}, wait=True
            )
            report["dataset"] = {k: dataset[k] for k in ("ref", "row_count", "checksum")}
            service = TrainerService(client, settings, owner="real-run")
            pm = client.create_run(
                type="pm",
                dataset=dataset["ref"],
                base_model="smollm2",
                config={
                    "max_steps": args.pm_steps,
                    "per_device_train_batch_size": 4,
                    "logging_steps": 1,
                    "max_length": 768,
                    "learning_rate": 2e-5,
                    "eval_fraction": 0.25,
                },
            )
            started = time.monotonic()
            pm = service.run_once()
            report["pm"] = {
                "status": pm["status"],
                "error": pm["error"],
                "seconds": round(time.monotonic() - started, 1),
                "metrics": [m["metrics"] for m in client.run_metrics(pm["id"])],
            }
            if pm["status"] == "completed":
                client.create_run(
                    type="ppo",
                    dataset=dataset["ref"],
                    base_model="smollm2",
                    reward_run=pm["id"],
                    config={
                        "total_steps": args.ppo_steps,
                        "batch_size": 4,
                        "mini_batch_size": 2,
                        "response_length": 24,
                        "ppo_epochs": 2,
                        "learning_rate": 1e-6,
                    },
                )
                started = time.monotonic()
                ppo = service.run_once()
                report["ppo"] = {
                    "status": ppo["status"],
                    "error": ppo["error"],
                    "seconds": round(time.monotonic() - started, 1),
                    "metrics": [m["metrics"] for m in client.run_metrics(ppo["id"])],
                }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
