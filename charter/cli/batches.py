"""``charter batches``: upload (JSONL, CSV, Parquet, a datasets directory), list, show, prompts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charter.cli.output import JsonOption, client, console, details, emit_json, errors, table, take
from charter.cli.progress import transfer
from charter.sdk.uploads import FORMATS

app = typer.Typer(help="Prompt batches.", no_args_is_help=True)

FormatOption = Annotated[
    str | None,
    typer.Option("--format", help=f"One of {', '.join(FORMATS)}; by default from the name."),
]


@app.command("upload")
def upload(
    path: Annotated[
        Path, typer.Argument(help="A JSONL, CSV or Parquet file, or a datasets directory.")
    ],
    name: Annotated[str, typer.Option(help="Batch name (default: the file's stem).")] = "",
    format: FormatOption = None,
    as_json: JsonOption = False,
) -> None:
    """Upload prompts, streamed, with a progress bar; prints the batch id last."""
    with client() as c, transfer(f"upload {path.name}", console=errors) as progress:
        batch = c.batches.upload(path, name, format=format, progress=None if as_json else progress)
    if as_json:
        emit_json(batch)
        return
    console.print(f"batch {batch.id}: {batch.row_count} rows")
    typer.echo(batch.id)


@app.command("list")
def list_(
    limit: Annotated[int | None, typer.Option(help="At most this many (newest first).")] = None,
    as_json: JsonOption = False,
) -> None:
    """The project's batches, newest first (every page)."""
    with client() as c:
        rows = take(c.batches.list(), limit)
    table(rows, ["id", "name", "row_count", "created_at"], as_json=as_json)


@app.command("show")
def show(batch_id: str, as_json: JsonOption = False) -> None:
    with client() as c:
        details(c.batches.get(batch_id), as_json=as_json)


@app.command("prompts")
def prompts(batch_id: str, limit: int | None = 20, as_json: JsonOption = False) -> None:
    """A batch's prompts, in order (``--limit 0``: all)."""
    with client() as c:
        rows = take(c.batches.prompts(batch_id), limit or None)
    table(rows, ["position", ("prompt", lambda r: r.prompt or r.messages)], as_json=as_json)
