"""``charter webhooks``: endpoints that receive signed events, and their deliveries."""

from __future__ import annotations

from typing import Annotated

import typer

from charter.cli.output import JsonOption, client, console, details, emit_json, table, take

app = typer.Typer(help="Webhook endpoints and deliveries (admin keys).", no_args_is_help=True)

COLUMNS = ["id", "url", "events", "enabled", "disabled_reason", "created_at"]


def _secret(endpoint: object, as_json: bool) -> None:
    if as_json:
        emit_json(endpoint)
        return
    console.print(f"webhook {getattr(endpoint, 'id', '')} -> {getattr(endpoint, 'url', '')}")
    console.print("signing secret (shown once):")
    typer.echo(getattr(endpoint, "secret", ""))


@app.command("create")
def create(
    url: str,
    event: Annotated[list[str], typer.Option(help="An event type to send (repeat).")],
    description: str = "",
    disabled: Annotated[bool, typer.Option(help="Create it disabled.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Add an endpoint; prints its signing secret once (last line)."""
    with client() as c:
        _secret(c.webhooks.create(url, event, description, enabled=not disabled), as_json)


@app.command("list")
def list_(limit: int | None = None, as_json: JsonOption = False) -> None:
    with client() as c:
        table(take(c.webhooks.list(), limit), COLUMNS, as_json=as_json)


@app.command("show")
def show(webhook_id: str, as_json: JsonOption = False) -> None:
    with client() as c:
        details(c.webhooks.get(webhook_id), as_json=as_json)


@app.command("update")
def update(
    webhook_id: str,
    url: str | None = None,
    event: Annotated[list[str] | None, typer.Option(help="Replace the event types.")] = None,
    description: str | None = None,
    enabled: Annotated[bool | None, typer.Option("--enable/--disable")] = None,
    as_json: JsonOption = False,
) -> None:
    """Change the given fields only."""
    with client() as c:
        endpoint = c.webhooks.update(
            webhook_id, url=url, events=event, description=description, enabled=enabled
        )
    details(endpoint, as_json=as_json)


@app.command("delete")
def delete(webhook_id: str) -> None:
    with client() as c:
        c.webhooks.delete(webhook_id)
    console.print(f"webhook {webhook_id} deleted")


@app.command("rotate-secret")
def rotate_secret(webhook_id: str, as_json: JsonOption = False) -> None:
    """A new signing secret (printed once); the old one stops signing at once."""
    with client() as c:
        _secret(c.webhooks.rotate_secret(webhook_id), as_json)


@app.command("test")
def test(webhook_id: str, as_json: JsonOption = False) -> None:
    """Queue a webhook.test ping to this endpoint."""
    with client() as c:
        details(c.webhooks.test(webhook_id), as_json=as_json)


@app.command("deliveries")
def deliveries(
    webhook_id: str,
    status: Annotated[str | None, typer.Option(help="Only deliveries in this status.")] = None,
    limit: int | None = 50,
    as_json: JsonOption = False,
) -> None:
    with client() as c:
        rows = take(c.webhooks.deliveries(webhook_id, status), limit)
    columns = ["id", "event_type", "status", "attempts", "last_status_code", "created_at"]
    table(rows, columns, as_json=as_json)


@app.command("resend")
def resend(delivery_id: str, as_json: JsonOption = False) -> None:
    """Send a delivery again (a new attempt cycle, due now)."""
    with client() as c:
        details(c.webhooks.resend(delivery_id), as_json=as_json)
