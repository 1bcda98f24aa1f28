"""``charter jobs``: submit, list, status, watch, cancel, results, items."""

from __future__ import annotations

from pathlib import Path
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
from charter.cli.progress import watch_jobs
from charter.client import _plain

app = typer.Typer(help="Labelling jobs.", no_args_is_help=True)

LimitOption = Annotated[int | None, typer.Option(help="At most this many.")]


def _done(job) -> str:  # type: ignore[no-untyped-def]
    counts = job.counts if hasattr(job, "counts") else job["counts"]
    return ", ".join(f"{k}={v}" for k, v in counts.items() if v)


@app.command("submit")
def submit(
    job_type: Annotated[
        str, typer.Option("--type", help="sl_cai, rl_cai, critique, revise, compare, generate")
    ],
    batch: Annotated[str, typer.Option(help="Prompt batch id.")],
    constitution: Annotated[str, typer.Option(help="name or name@version.")] = "default",
    model: str = "smollm2",
    params: Annotated[str, typer.Option(help="JSON object of job params.")] = "{}",
    seed: int | None = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Reuse to make a resubmission a no-op (default: fresh).")
    ] = None,
    watch: Annotated[bool, typer.Option(help="Follow it with a progress bar.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Submit a labelling job; prints its id last."""
    spec = {"type": job_type, "batch_id": batch, "constitution": constitution, "model": model}
    spec |= {"params": parse_json(params, "--params")} | (
        {"seed": seed} if seed is not None else {}
    )
    with client() as c:
        job = c.submit_job(idempotency_key, **spec)
        if watch:
            job = watch_jobs(c, [job["id"]], console=errors)[0]
    if as_json:
        emit_json(job)
        return
    console.print(f"job {job['id']} ({job['type']}, {job['item_count']} items) {job['status']}")
    typer.echo(job["id"])


@app.command("list")
def list_(limit: LimitOption = 50, as_json: JsonOption = False) -> None:
    """The project's jobs, newest first."""
    with client() as c:
        rows = take(c.jobs.list(), limit)
    columns = ["id", "type", "status", "model", "item_count", ("counts", _done), "created_at"]
    table(rows, columns, as_json=as_json)


@app.command("status")
def status(
    job_id: str,
    watch: Annotated[bool, typer.Option(help="Follow it with a progress bar.")] = False,
    as_json: JsonOption = False,
) -> None:
    """A job's state and counts per item state; --watch follows it."""
    with client() as c:
        job = watch_jobs(c, [job_id], console=errors)[0] if watch else c.job(job_id)
    details(job, as_json=as_json)


@app.command("watch")
def watch(
    job_ids: Annotated[list[str], typer.Argument(help="One or more job ids.")],
    poll: float = 1.0,
    as_json: JsonOption = False,
) -> None:
    """Follow jobs until each is completed or cancelled: items done, rate, time left."""
    with client() as c:
        jobs = watch_jobs(c, job_ids, poll=poll, console=errors)
    table(jobs, ["id", "type", "status", ("counts", _done)], as_json=as_json)


@app.command("cancel")
def cancel(job_id: str, as_json: JsonOption = False) -> None:
    """Cancel a job: queued items are dropped, running chunks stop at their next fence."""
    with client() as c:
        job = c.jobs.cancel(job_id)
    if as_json:
        emit_json(job)
        return
    console.print(
        f"job {job.id} {job.status.value if hasattr(job.status, 'value') else job.status}"
    )


@app.command("results")
def results(
    job_id: str,
    out: Annotated[Path | None, typer.Option(help="Write every label as JSONL here.")] = None,
    limit: LimitOption = None,
    as_json: JsonOption = False,
) -> None:
    """A job's labels: a table (the first 20), every one as JSON, or a JSONL file."""
    import json

    with client() as c:
        labels = c.jobs.results(job_id)
        if out is not None:
            count = 0
            with out.open("w", encoding="utf-8") as f:
                for label in labels:
                    if limit is not None and count >= limit:
                        break
                    f.write(json.dumps(_plain(label), ensure_ascii=False) + "\n")
                    count += 1
            console.print(f"{count} labels -> {out}")
            return
        rows = take(labels, limit if limit is not None or as_json else 20)
    columns = ["id", "kind", "prompt_id", ("p_a", lambda r: r.p_a), "principle_ids", "model"]
    table(rows, columns, as_json=as_json)


@app.command("items")
def items(
    job_id: str,
    state: Annotated[str | None, typer.Option(help="Only items in this state.")] = None,
    limit: LimitOption = 50,
    as_json: JsonOption = False,
) -> None:
    """A job's work items (state, attempts, error)."""
    with client() as c:
        rows = take(c.jobs.items(job_id, state), limit)
    table(rows, ["id", "prompt_id", "state", "attempt", "last_error"], as_json=as_json)
