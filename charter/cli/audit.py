"""``charter audit``: the project's state-changing calls (admin keys)."""

from __future__ import annotations

from typing import Annotated

import typer

from charter.cli.output import JsonOption, client, table, take

app = typer.Typer(help="The audit log (read-only).", no_args_is_help=True)


@app.command("list")
def list_(
    route: str | None = None,
    key_prefix: str | None = None,
    outcome: Annotated[str | None, typer.Option(help="succeeded, refused or failed.")] = None,
    object_id: Annotated[str | None, typer.Option(help="Any id the call named or created.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO-8601, inclusive (UTC by default).")] = None,
    until: Annotated[str | None, typer.Option(help="ISO-8601, exclusive.")] = None,
    limit: int | None = 100,
    as_json: JsonOption = False,
) -> None:
    """Events, newest first."""
    with client() as c:
        events = c.audit.list(
            route=route, key_prefix=key_prefix, outcome=outcome, object_id=object_id,
            since=since, until=until,
        )  # fmt: skip
        rows = take(events, limit)
    columns = ["id", "created_at", "key_prefix", "method", "route", "outcome", "status_code"]
    table(rows, columns, as_json=as_json)
