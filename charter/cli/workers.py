"""``charter workers``: the labelling workers the gateway has heard from."""

from __future__ import annotations

import typer

from charter.cli.output import JsonOption, client, table

app = typer.Typer(help="Labelling workers.", no_args_is_help=True)


@app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """Workers seen recently: engine, models, items done, last heartbeat."""
    with client() as c:
        rows = c.workers.list()
    columns = ["id", "hostname", "pid", "engine", "models", "items_done", "last_seen"]
    table(rows, columns, as_json=as_json)
