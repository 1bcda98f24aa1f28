"""``charter reviews``: human review of AI labels (queues, verdicts, agreement)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charter.cli.output import JsonOption, client, console, details, emit_json, table, take

app = typer.Typer(help="Human review of AI labels.", no_args_is_help=True)


@app.command("open")
def open_(
    job_id: str,
    size: Annotated[int, typer.Option(help="Labels to sample.")],
    strategy: Annotated[str | None, typer.Option(help="random or stratified.")] = None,
    by: Annotated[
        str | None, typer.Option(help="Stratify by principle, confidence or swap_disagreement.")
    ] = None,
    seed: int | None = None,
    as_json: JsonOption = False,
) -> None:
    """Open a review queue over a seeded sample of the job's labels; prints its id last."""
    with client() as c:
        queue = c.reviews.open_queue(job_id, size, strategy=strategy, by=by, seed=seed)
    if as_json:
        emit_json(queue)
        return
    console.print(f"queue {queue.id}: {queue.size} labels of job {queue.job_id}")
    typer.echo(queue.id)


@app.command("show")
def show(queue_id: str, as_json: JsonOption = False) -> None:
    with client() as c:
        details(c.reviews.queue(queue_id), as_json=as_json, skip=("items",))


@app.command("items")
def items(
    queue_id: str, reviewer: str = "", limit: int | None = 50, as_json: JsonOption = False
) -> None:
    """The queue's items, with the AI label and your verdict."""
    with client() as c:
        rows = take(c.reviews.items(queue_id, reviewer), limit)
    columns = ["position", "label_id", "kind", "stratum", "ai_label", "reviewed_by_me", "verdicts"]
    table(rows, columns, as_json=as_json)


@app.command("verdict")
def verdict(
    queue_id: str,
    label_id: int,
    choice: Annotated[str | None, typer.Option(help="A comparison: A, B or tie.")] = None,
    satisfies: Annotated[
        bool | None, typer.Option("--satisfies/--fails", help="A revision: does it satisfy?")
    ] = None,
    note: str | None = None,
    reviewer: str | None = None,
    as_json: JsonOption = False,
) -> None:
    """Give (or replace) your verdict on a queued label."""
    with client() as c:
        given = c.reviews.verdict(
            queue_id, label_id, choice=choice, satisfies=satisfies, note=note, reviewer=reviewer
        )
    details(given, as_json=as_json, skip=("history",))


@app.command("agreement")
def agreement(
    job_id: Annotated[str | None, typer.Argument(help="One job (default: the project).")] = None,
    model: Annotated[str | None, typer.Option(help="Project-wide: one model's labels.")] = None,
    as_json: JsonOption = False,
) -> None:
    """AI-human agreement: overall, per principle and model, and Cohen's kappa."""
    with client() as c:
        report = c.reviews.agreement(job_id, model=model)
    if as_json:
        emit_json(report)
        return
    data = report.model_dump(mode="json")
    overall = data.get("overall") or {}
    console.print(
        f"{data.get('labels')} labels, {data.get('verdicts')} verdicts: agreement "
        f"{overall.get('rate')} ({overall.get('agreed')}/{overall.get('n')})"
    )
    rows = [{"principle": k, **v} for k, v in (data.get("by_principle") or {}).items()]
    if rows:
        table(rows, ["principle", "agreed", "n", "rate", "low", "high"], as_json=False)


@app.command("export")
def export(job_id: str, dest: Path) -> None:
    """The job's verdicts as JSONL."""
    with client() as c:
        text = c.reviews.export(job_id)
    dest.write_text(text, encoding="utf-8")
    console.print(f"{text.count(chr(10))} verdicts -> {dest}")


@app.command("import")
def import_(job_id: str, path: Path, as_json: JsonOption = False) -> None:
    """Import verdicts (the export's JSONL): all lines or none."""
    with client() as c:
        result = c.reviews.import_(job_id, path)
    details(result, as_json=as_json)
