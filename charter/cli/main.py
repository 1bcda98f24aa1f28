"""``charter``: run the services, bootstrap keys, and drive the API from a shell."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from charter.client import CharterAPIError, CharterClient, dump
from charter.settings import get_settings

app = typer.Typer(help="Charter: constitutions in, AI-feedback labels out.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
constitutions_app = typer.Typer(help="Constitution versions.", no_args_is_help=True)
batches_app = typer.Typer(help="Prompt batches.", no_args_is_help=True)
jobs_app = typer.Typer(help="Labelling jobs.", no_args_is_help=True)
for sub, name in (
    (db_app, "db"),
    (keys_app, "keys"),
    (constitutions_app, "constitutions"),
    (batches_app, "batches"),
    (jobs_app, "jobs"),
):
    app.add_typer(sub, name=name)

console = Console()


def _client() -> CharterClient:
    return CharterClient()


def _api(call):  # type: ignore[no-untyped-def]
    """Run an API call; print a clear error (never a traceback) on a 4xx/5xx."""
    try:
        return call()
    except CharterAPIError as exc:
        console.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from exc


@app.command()
def serve(
    host: str = "127.0.0.1", port: int = 8000, workers: int = 1, migrate: bool = True
) -> None:
    """Run the REST gateway (uvicorn)."""
    import uvicorn

    from charter.db.migrate import upgrade

    if migrate:
        upgrade(get_settings().effective_database_url)
    proxies = get_settings().trusted_proxies.strip()
    uvicorn.run(
        "services.gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # X-Forwarded-For is believed only from the configured proxies (uvicorn's
        # default trusts 127.0.0.1, which would let a local client choose its address).
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION."""
    from charter.db.migrate import upgrade

    upgrade(get_settings().effective_database_url, revision)
    console.print(f"database at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (``base`` drops everything)."""
    from charter.db.migrate import downgrade

    downgrade(get_settings().effective_database_url, revision)
    console.print(f"database at {revision}")


@keys_app.command("create")
def keys_create(
    project: Annotated[str, typer.Option(help="Project name; created if missing.")],
    scopes: Annotated[str, typer.Option(help="Comma list of admin,submit,read,train.")] = "admin",
    name: str = "",
) -> None:
    """Bootstrap: create a key directly in the database and print it once."""
    from charter.db.session import session_factory
    from charter.errors import CharterError
    from charter.projects import ensure_project, issue_key

    settings = get_settings()
    with session_factory()() as session:
        try:
            row = ensure_project(session, project)
            key_row, plaintext = issue_key(
                session,
                row.id,
                [s.strip() for s in scopes.split(",")],
                settings.secret_key,
                name=name,
            )
        except CharterError as exc:
            console.print(f"[red]error[/red] {exc.field}: {exc.detail}")
            raise typer.Exit(1) from exc
        session.commit()
    console.print(f"project {project}: key {key_row.prefix} with scopes {key_row.scopes}")
    typer.echo(plaintext)


@constitutions_app.command("push")
def constitutions_push(path: Path) -> None:
    """Push a YAML/JSON constitution; identical content returns the existing version."""
    with _client() as client:
        result = _api(lambda: client.push_constitution(path))
    state = "new version" if result["created"] else "unchanged"
    console.print(f"{result['ref']} ({state}, sha256 {result['content_hash'][:12]})")


@constitutions_app.command("list")
def constitutions_list() -> None:
    with _client() as client:
        rows = _api(client.constitutions)
    table = Table("name", "latest", "updated")
    for row in rows:
        table.add_row(row["name"], str(row["latest_version"]), row["updated_at"])
    console.print(table)


@constitutions_app.command("diff")
def constitutions_diff(name: str, before: int, after: int) -> None:
    with _client() as client:
        typer.echo(dump(_api(lambda: client.diff_constitution(name, before, after))))


@batches_app.command("upload")
def batches_upload(path: Path, name: str = "") -> None:
    """Upload a JSONL file of prompts."""
    with _client() as client:
        batch = _api(lambda: client.upload_batch(path, name))
    console.print(f"batch {batch['id']}: {batch['row_count']} rows")
    typer.echo(batch["id"])


@jobs_app.command("submit")
def jobs_submit(
    job_type: Annotated[
        str, typer.Option("--type", help="sl_cai, rl_cai, critique, revise, compare")
    ],
    batch: Annotated[str, typer.Option(help="Prompt batch id.")],
    constitution: Annotated[str, typer.Option(help="name or name@version.")] = "default",
    model: str = "smollm2",
    params: Annotated[str, typer.Option(help="JSON object of job params.")] = "{}",
    seed: int | None = None,
    idempotency_key: str | None = None,
) -> None:
    """Submit a labelling job."""
    try:
        parsed = json.loads(params)
    except json.JSONDecodeError as exc:
        console.print(f"[red]error[/red] --params is not JSON: {exc}")
        raise typer.Exit(2) from exc
    spec = {"type": job_type, "batch_id": batch, "constitution": constitution, "model": model}
    spec |= {"params": parsed} | ({"seed": seed} if seed is not None else {})
    with _client() as client:
        job = _api(lambda: client.submit_job(idempotency_key, **spec))
    console.print(f"job {job['id']} ({job['type']}, {job['item_count']} items) {job['status']}")
    typer.echo(job["id"])


@jobs_app.command("status")
def jobs_status(job_id: str, watch: bool = False) -> None:
    """Show a job's counts per state; --watch follows it with a progress bar."""
    from charter.cli.progress import watch_job

    with _client() as client:
        job = watch_job(client, job_id) if watch else _api(lambda: client.job(job_id))
    typer.echo(dump(job))


def main() -> None:  # pragma: no cover - console entry point
    app()


models_app = typer.Typer(
    help="Local models (nothing is downloaded from a hub).", no_args_is_help=True
)
sweeper_app = typer.Typer(
    help="The sweeper that repairs lost or stalled work.", no_args_is_help=True
)
app.add_typer(models_app, name="models")
app.add_typer(sweeper_app, name="sweeper")


@models_app.command("prepare")
def models_prepare(name: str = "smollm2", force: bool = False) -> None:
    """Convert the packaged SmolLM2 GGUF into a cached safetensors directory (once)."""
    from charter.model_store import prepare_smollm2

    if name != "smollm2":
        console.print(
            "[red]error[/red] only 'smollm2' ships with Charter; map others in CHARTER_MODELS"
        )
        raise typer.Exit(2)
    with console.status("preparing smollm2 (first time: under a minute)"):
        path = prepare_smollm2(get_settings().models_dir / name, force=force)
    typer.echo(str(path))


@app.command()
def worker(
    concurrency: int = 1,
    loglevel: str = "INFO",
    name: Annotated[str, typer.Option(help="Celery node name.")] = "charter@%h",
) -> None:
    """Run a labelling worker (Celery) for the models in CHARTER_WORKER_MODELS.

    SIGTERM or Ctrl-C: it exits within CHARTER_WORKER_SHUTDOWN_SECONDS, its chunk requeued.
    """
    from workers.celery_app import app as celery_app

    celery_app.worker_main(
        ["worker", "-c", str(concurrency), "-P", "prefork", "-n", name, "--loglevel", loglevel]
    )


@sweeper_app.command("run")
def sweeper_run(once: bool = False) -> None:
    """Re-queue expired leases, publish unpublished work, complete finished jobs."""
    import logging

    from charter.db.session import session_factory
    from charter.queue import make_celery
    from workers.sweeper import run_forever, sweep

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    sessions, producer = session_factory(), make_celery(settings, name="charter-sweeper")
    if once:
        console.print(sweep(sessions, producer, settings))
        return
    run_forever(sessions, producer, settings)


@app.command()
def demo(
    prompts: Annotated[Path | None, typer.Option(help="JSONL prompts.")] = None,
    limit: Annotated[int, typer.Option(help="Use the first N prompts.")] = 16,
    max_tokens: Annotated[int, typer.Option(help="Tokens per generation.")] = 96,
    out: Annotated[Path, typer.Option(help="Where the exported datasets go.")] = Path(
        "charter-demo"
    ),
) -> None:
    """The main job, embedded: label prompts with SmolLM2 (SL-CAI and RL-CAI) and export them."""
    from charter.cli.demo import run_demo

    run_demo(prompts=prompts, limit=limit, max_tokens=max_tokens, out=out, console=console)


trainer_app = typer.Typer(help="The trainer service.", no_args_is_help=True)
app.add_typer(trainer_app, name="trainer")


@trainer_app.command("run")
def trainer_run(
    once: Annotated[bool, typer.Option(help="Run at most one queued run, then exit.")] = False,
    poll: float = 5.0,
) -> None:
    """Claim queued training runs over the API and execute them (never touches the database)."""
    import logging

    from services.trainer.service import TrainerService

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    service = TrainerService(CharterClient(), get_settings())
    if once:
        run = service.run_once()
        typer.echo(dump(run) if run else "no queued run")
        return
    service.run_forever(poll)


@app.command()
def train(
    run_type: Annotated[str, typer.Argument(help="sft, pm, dpo or ppo")],
    dataset: Annotated[str, typer.Option(help="Dataset name or name@version.")],
    base_model: Annotated[str, typer.Option(help="Model name or run:<id>.")] = "smollm2",
    reward_run: Annotated[str | None, typer.Option(help="PPO: the PM run id.")] = None,
    reference_model: Annotated[str | None, typer.Option(help="PPO: KL reference model.")] = None,
    config: Annotated[str, typer.Option(help="JSON object of trainer config fields.")] = "{}",
    watch: Annotated[bool, typer.Option(help="Follow the run until it ends.")] = False,
) -> None:
    """Queue a training run (a trainer service picks it up)."""
    try:
        overrides = json.loads(config)
    except json.JSONDecodeError as exc:
        console.print(f"[red]error[/red] --config is not JSON: {exc}")
        raise typer.Exit(2) from exc
    spec: dict[str, object] = {
        "type": run_type,
        "dataset": dataset,
        "base_model": base_model,
        "config": overrides,
    }
    if reward_run:
        spec["reward_run"] = reward_run
    if reference_model:
        spec["reference_model"] = reference_model
    with _client() as client:
        run = _api(lambda: client.create_run(**spec))
        console.print(f"run {run['id']} ({run['type']} on {run['dataset']}) {run['status']}")
        if watch:
            with console.status("training") as status:
                while run["status"] in {"queued", "running"}:
                    time.sleep(2)
                    run = client.run(run["id"])
                    shown = ", ".join(
                        f"{k}={v:.4g}" for k, v in (run.get("last_metrics") or {}).items()
                    )
                    status.update(f"{run['status']} {shown}")
        typer.echo(dump(run) if watch else run["id"])
