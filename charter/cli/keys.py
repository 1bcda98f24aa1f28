"""``charter keys``: create (over the API, or ``--project`` to bootstrap on the
database), list, revoke."""

from __future__ import annotations

from typing import Annotated

import typer

from charter.cli.output import Failure, JsonOption, UsageError, client, console, emit_json, table

app = typer.Typer(help="API keys.", no_args_is_help=True)

COLUMNS = [
    "id",
    "name",
    "prefix",
    "scopes",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
]


@app.command("create")
def create(
    project: Annotated[
        str | None,
        typer.Option(
            help="Bootstrap: create the key directly in the database (CHARTER_DATABASE_URL) for "
            "this project, created if missing. Without it, the key is made over the API in "
            "the project of CHARTER_API_KEY (an admin key)."
        ),
    ] = None,
    scopes: Annotated[
        str, typer.Option(help="Comma list of admin,submit,read,train,review.")
    ] = "admin",
    name: str = "",
    expires_in_days: Annotated[
        int | None, typer.Option(help="API path: expire after N days.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key and print its secret once (last line)."""
    scope_list = [s.strip() for s in scopes.split(",") if s.strip()]
    if project is not None:
        if expires_in_days is not None:
            raise UsageError("--expires-in-days is for keys made over the API (no --project)")
        prefix, granted, plaintext = _bootstrap(project, scope_list, name)
        if as_json:
            emit_json({"project": project, "prefix": prefix, "scopes": granted, "key": plaintext})
            return
        console.print(f"project {project}: key {prefix} with scopes {granted}")
        typer.echo(plaintext)
        return
    with client() as c:
        created = c.keys.create(scope_list, name, expires_in_days=expires_in_days)
    if as_json:
        emit_json(created)
        return
    console.print(f"key {created.prefix} ({created.id}) with scopes {created.scopes}")
    typer.echo(created.key)


def _bootstrap(project: str, scopes: list[str], name: str) -> tuple[str, list[str], str]:
    from charter.db.session import session_factory
    from charter.errors import CharterError
    from charter.key_issuing import ensure_project, issue_key
    from charter.settings import get_settings

    settings = get_settings()
    with session_factory()() as session:
        try:
            row = ensure_project(session, project)
            key_row, plaintext = issue_key(session, row.id, scopes, settings.secret_key, name=name)
        except CharterError as exc:
            raise Failure(f"{exc.field}: {exc.detail}" if exc.field else exc.detail) from exc
        session.commit()
        return key_row.prefix, list(key_row.scopes), plaintext


@app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """The project's keys (never their secrets)."""
    with client() as c:
        rows = c.keys.list()
    table(rows, COLUMNS, as_json=as_json)


@app.command("revoke")
def revoke(key_id: str, as_json: JsonOption = False) -> None:
    """Revoke a key at once (409 for the project's last usable admin key)."""
    with client() as c:
        key = c.keys.revoke(key_id)
    if as_json:
        emit_json(key)
        return
    console.print(f"key {key.prefix} ({key.id}) revoked at {key.revoked_at}")
