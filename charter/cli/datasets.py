"""``charter datasets``: create (freeze labels), upload, list, show, versions, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from charter.cli.output import (
    JsonOption,
    UsageError,
    client,
    console,
    details,
    emit_json,
    errors,
    parse_json,
    table,
    take,
)
from charter.cli.progress import transfer
from charter.client import CharterClient
from charter.sdk.api import Datasets, poll
from charter.sdk.uploads import FORMATS, ProgressCallback

app = typer.Typer(help="Training datasets: frozen, versioned labels.", no_args_is_help=True)

COLUMNS = ["ref", "kind", "state", "source", "row_count", "created_at"]


@app.command("create")
def create(
    name: str,
    kind: Annotated[str, typer.Option(help="sft or preference.")],
    job: Annotated[list[str] | None, typer.Option(help="Only labels of this job (repeat).")] = None,
    constitution: Annotated[str | None, typer.Option(help="Only labels under this ref.")] = None,
    label_kind: Annotated[
        list[str] | None, typer.Option(help="Only labels of this kind (repeat).")
    ] = None,
    min_confidence: Annotated[
        float | None, typer.Option(help="Preference: min |p_a - 0.5|*2.")
    ] = None,
    filter: Annotated[str | None, typer.Option(help="The whole filter as a JSON object.")] = None,
    mix: Annotated[str | None, typer.Option(help="JSON mix spec (source, ratio, seed).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait until it is frozen (with progress).")] = True,
    as_json: JsonOption = False,
) -> None:
    """Freeze the labels the filter selects into a new version of NAME."""
    selected = parse_json(filter, "--filter") if filter else {}
    if not isinstance(selected, dict):
        raise UsageError("--filter must be a JSON object")
    for key, given in (
        ("job_ids", job), ("constitution", constitution), ("kinds", label_kind),
        ("min_confidence", min_confidence),
    ):  # fmt: skip
        if given:
            selected[key] = given
    mixed = parse_json(mix, "--mix") if mix else None
    with client() as c:
        version = c.create_dataset(name, kind, selected, mixed, wait=False)
        if wait:
            with transfer(f"freeze {version['ref']}", console=errors) as progress:
                version = _wait(c, version["ref"], None if as_json else progress)
    if as_json:
        emit_json(version)
        return
    console.print(f"{version['ref']} {version['state']}: {version['row_count']} rows")
    typer.echo(version["ref"])


def _wait(c: CharterClient, ref: str, progress: ProgressCallback | None) -> dict[str, Any]:
    """The version once frozen, the bar following its rows (FreezeFailed if it failed)."""

    def update(version: dict[str, Any]) -> None:
        if progress:
            progress(version["rows_done"], version["rows_total"] or None, "rows")

    fetch = lambda: Datasets().get(ref).raw()  # noqa: E731
    done = lambda v: v["state"] != "freezing"  # noqa: E731
    c.run_procedure(poll(fetch, done, timeout=3600, interval=1.0, first=0.05, on_update=update))
    return c.wait_dataset(ref)  # raises FreezeFailed for a failed one


@app.command("upload")
def upload(
    name: str,
    path: Annotated[Path, typer.Argument(help="JSONL, CSV, Parquet or a datasets directory.")],
    kind: Annotated[str | None, typer.Option(help="sft or preference (for a new dataset).")] = None,
    format: Annotated[str | None, typer.Option(help=f"One of {', '.join(FORMATS)}.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Rows in TRL shape as a new version of NAME, streamed with progress."""
    with client() as c, transfer(f"upload {path.name}", console=errors) as progress:
        version = c.datasets.upload(
            name, path, kind, format=format, progress=None if as_json else progress
        )
    if as_json:
        emit_json(version)
        return
    console.print(f"{version.ref}: {version.row_count} rows")
    typer.echo(version.ref)


@app.command("list")
def list_(limit: int | None = None, as_json: JsonOption = False) -> None:
    """Every dataset of the project, latest version each."""
    with client() as c:
        rows = take(c.datasets.list(), limit)
    table(rows, COLUMNS, as_json=as_json)


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="name (the latest) or name@version.")],
    as_json: JsonOption = False,
) -> None:
    with client() as c:
        details(c.datasets.get(ref), as_json=as_json)


@app.command("versions")
def versions(name: str, as_json: JsonOption = False) -> None:
    with client() as c:
        rows = c.datasets.versions(name)
    table(rows, COLUMNS, as_json=as_json)


@app.command("export")
def export(
    ref: Annotated[str, typer.Argument(help="name (the latest) or name@version.")],
    dest: Annotated[Path, typer.Argument(help="The file to write.")],
    format: Annotated[str, typer.Option(help="jsonl or parquet.")] = "jsonl",
    resume: Annotated[bool, typer.Option(help="Continue a partial JSONL file.")] = False,
    verify: Annotated[bool, typer.Option(help="Check the checksum and row count.")] = True,
    as_json: JsonOption = False,
) -> None:
    """Stream a version to a file (resumed after a drop, verified), with progress."""
    with client() as c, transfer(f"export {ref}", console=errors) as progress:
        result = c.export_dataset(
            ref, dest, format, verify=verify, resume=resume, progress=None if as_json else progress
        )
    if as_json:
        emit_json(result)
        return
    console.print(f"{result['ref']}: {result['rows']} rows -> {result['path']}")
