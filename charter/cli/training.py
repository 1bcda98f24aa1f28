"""``charter train``: queue a run (``train sft|pm|dpo|ppo|rloo|grpo``), list, show, watch,
metrics, cancel, resume. A trainer service (``charter trainer run``) executes runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from charter.cli.output import (
    JsonOption,
    client,
    console,
    details,
    emit_json,
    errors,
    parse_json,
    table,
    take,
)
from charter.cli.progress import watch_run

app = typer.Typer(
    help="Training runs (SFT, PM, DPO, PPO, RLOO, GRPO, constitutional classifiers).",
    no_args_is_help=True,
)

RUN_TYPES = ("sft", "pm", "dpo", "ppo", "rloo", "grpo", "classifier")
COLUMNS = ["id", "type", "status", "dataset", "created_at", "finished_at"]


def _queue(run_type: str) -> Callable[..., None]:
    def command(
        dataset: Annotated[str, typer.Option(help="Dataset name or name@version.")],
        base_model: Annotated[str, typer.Option(help="Model name or run:<id>.")] = "smollm2",
        reward_run: Annotated[
            str | None, typer.Option(help="PPO, RLOO, GRPO: the PM run id.")
        ] = None,
        reference_model: Annotated[
            str | None, typer.Option(help="PPO: KL reference model.")
        ] = None,
        config: Annotated[
            str,
            typer.Option(
                help="JSON object of the run type's config fields (charter/core/run_configs.py); "
                "the gateway refuses unknown fields and out-of-range values."
            ),
        ] = "{}",
        watch: Annotated[bool, typer.Option(help="Follow the run until it ends.")] = False,
        as_json: JsonOption = False,
    ) -> None:
        spec: dict[str, object] = {
            "type": run_type,
            "dataset": dataset,
            "base_model": base_model,
            "config": parse_json(config, "--config"),
        }
        if reward_run:
            spec["reward_run"] = reward_run
        if reference_model:
            spec["reference_model"] = reference_model
        with client() as c:
            run = c.create_run(**spec)
            if not as_json:
                console.print(
                    f"run {run['id']} ({run['type']} on {run['dataset']}) {run['status']}"
                )
            if watch:
                run = watch_run(c, run["id"], console=errors)
        if as_json:
            emit_json(run)
        elif watch:
            details(run, as_json=False)
        else:
            typer.echo(run["id"])

    command.__doc__ = f"Queue a {run_type.upper()} run (a trainer service picks it up)."
    return command


for _type in RUN_TYPES:
    app.command(_type)(_queue(_type))


@app.command("list")
def list_(limit: int | None = 50, as_json: JsonOption = False) -> None:
    """The project's runs, newest first."""
    with client() as c:
        rows = take(c.runs.list(), limit)
    table(rows, COLUMNS, as_json=as_json)


@app.command("show")
def show(run_id: str, as_json: JsonOption = False) -> None:
    with client() as c:
        details(c.runs.get(run_id), as_json=as_json)


@app.command("watch")
def watch(run_id: str, poll: float = 2.0, as_json: JsonOption = False) -> None:
    """Follow a run until it completes, fails or is cancelled (epochs, rate, metrics)."""
    with client() as c:
        run = watch_run(c, run_id, poll=poll, console=errors)
    details(run, as_json=as_json)


@app.command("metrics")
def metrics(run_id: str, limit: int | None = None, as_json: JsonOption = False) -> None:
    """The metric points a run reported, oldest first."""
    with client() as c:
        rows = take(c.runs.metrics(run_id), limit)
    table(rows, ["step", "metrics", "created_at"], as_json=as_json)


@app.command("cancel")
def cancel(run_id: str, as_json: JsonOption = False) -> None:
    """Cancel a queued or running run (the trainer stops at its next heartbeat)."""
    with client() as c:
        run = c.runs.cancel(run_id)
    _status_line(run, as_json)


@app.command("resume")
def resume(run_id: str, as_json: JsonOption = False) -> None:
    """Queue a failed or cancelled run again, from its last checkpoint."""
    with client() as c:
        run = c.runs.resume(run_id)
    _status_line(run, as_json)


def _status_line(run: object, as_json: bool) -> None:
    if as_json:
        emit_json(run)
    else:
        status = getattr(run, "status", "")
        console.print(f"run {getattr(run, 'id', '')} {getattr(status, 'value', status)}")
