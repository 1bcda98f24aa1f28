"""``charter``: run the services, bootstrap keys, and drive the API from a shell.

The API commands live beside this module, one per resource (``constitutions``,
``batches``, ``jobs``, ``datasets``, ``train``, ``keys``, ``workers``); this one
composes them and holds the commands that run processes (``serve``, ``worker``,
``sweeper``, ``trainer``, ``demo``) and the database ones."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from charter.cli import (
    audit,
    batches,
    classifiers,
    collective,
    constitutions,
    datasets,
    evals,
    jobs,
    keys,
    pipelines,
    policy_evals,
    reviews,
    templates,
    training,
    webhooks,
    workers,
)
from charter.cli.output import HandledGroup, console
from charter.client import CharterClient, dump
from charter.settings import get_client_settings, get_settings

app = typer.Typer(
    cls=HandledGroup,  # the one error handler: API errors are a line and a status
    help="Charter: constitutions in, AI-feedback labels out.",
    no_args_is_help=True,
)  # add_completion stays on: `charter --install-completion` / `--show-completion`
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
for sub, name in (
    (db_app, "db"),
    (keys.app, "keys"),
    (constitutions.app, "constitutions"),
    (batches.app, "batches"),
    (jobs.app, "jobs"),
    (datasets.app, "datasets"),
    (training.app, "train"),
    (workers.app, "workers"),
    (webhooks.app, "webhooks"),
    (audit.app, "audit"),
    (reviews.app, "reviews"),
    (templates.app, "templates"),
    (evals.app, "eval"),
    (policy_evals.app, "policy-eval"),
    (pipelines.app, "pipeline"),
    (collective.app, "collective"),
    (classifiers.app, "classifier"),
):
    app.add_typer(sub, name=name)


@contextmanager
def metrics_directory(workers: int) -> Iterator[None]:
    """With several gateway processes, the directory where each writes its HTTP metrics
    (prometheus_client's multiprocess mode), so that any of them answers a scrape for
    all: ``PROMETHEUS_MULTIPROC_DIR`` if set (emptied first: counts must start at zero),
    else a temporary one removed at exit."""
    if workers <= 1:
        yield
        return
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    directory = Path(given) if given else Path(tempfile.mkdtemp(prefix="charter-metrics-"))
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # inherited by each process
    try:
        yield
    finally:
        if not given:
            shutil.rmtree(directory, ignore_errors=True)


@app.command()
def serve(
    host: str = "127.0.0.1", port: int = 8000, workers: int = 1, migrate: bool = True
) -> None:
    """Run the REST gateway (uvicorn; with --workers N, N processes that share the load)."""
    from charter import log_format
    from charter.db.migrate import upgrade
    from services.gateway import server

    log_format.configure(get_settings().log_json)

    if migrate:
        upgrade(get_settings().effective_database_url)
    proxies = get_settings().trusted_proxies.strip()
    with metrics_directory(workers):
        server.run(
            host,
            port,
            workers,
            # X-Forwarded-For is believed only from the configured proxies (uvicorn's
            # default trusts 127.0.0.1, which would let a local client choose its address).
            proxy_headers=bool(proxies),
            forwarded_allow_ips=proxies or None,
            log_config=log_format.dict_config(get_settings().log_json),
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
    """Re-queue expired leases, publish unpublished work, complete finished jobs, send
    due webhooks."""
    from charter import log_format
    from charter.db.session import session_factory
    from charter.queue import make_celery
    from workers.sweeper import run_forever, sweep
    from workers.webhook_delivery import http_client

    settings = get_settings()
    log_format.configure(settings.log_json)
    sessions, producer = session_factory(), make_celery(settings, name="charter-sweeper")
    if once:
        with http_client(settings) as http:  # one pass sends the due webhooks too
            console.print(sweep(sessions, producer, settings, http))
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
    from charter import log_format
    from services.trainer.daemon import TrainerService

    client_settings = get_client_settings()
    log_format.configure(client_settings.log_json)
    service = TrainerService(CharterClient(), client_settings)
    try:
        if once:
            run = service.run_once()
            typer.echo(dump(run) if run else "no queued run")
            return
        service.run_forever(poll)
    finally:
        service.close()
