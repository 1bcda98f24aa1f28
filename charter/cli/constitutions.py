"""``charter constitutions``: push, list, show, versions, diff."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from charter.cli.output import JsonOption, client, console, details, emit_json, table

app = typer.Typer(help="Constitution versions.", no_args_is_help=True)


@app.command("push")
def push(path: Path, as_json: JsonOption = False) -> None:
    """Push a YAML/JSON constitution; identical content returns the existing version."""
    with client() as c:
        result = c.constitutions.push(path)
    if as_json:
        emit_json(result)
        return
    state = "new version" if result.created else "unchanged"
    console.print(f"{result.ref} ({state}, sha256 {result.content_hash[:12]})")


@app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """Every constitution of the project, with its latest version."""
    with client() as c:
        rows = c.constitutions.list()
    table(rows, ["name", ("latest", lambda r: r.latest_version), "updated_at"], as_json=as_json)


@app.command("show")
def show(
    ref: Annotated[str, typer.Argument(help="name (the latest) or name@version.")],
    as_json: JsonOption = False,
) -> None:
    """One version, with its principles."""
    with client() as c:
        version = c.constitutions.get(ref)
    if as_json:
        emit_json(version)
        return
    details(version, as_json=False, skip=("content",))
    document = version.content or {}
    for kind in ("critique_principles", "comparison_principles"):
        principles = document.get(kind) or []
        if principles:
            table(principles, ["id", "text"], as_json=False, title=kind.replace("_", " "))


@app.command("versions")
def versions(name: str, as_json: JsonOption = False) -> None:
    """Every version of a constitution."""
    with client() as c:
        rows = c.constitutions.versions(name)
    table(rows, ["ref", "version", "content_hash", "created_at"], as_json=as_json)


@app.command("diff")
def diff(name: str, before: int, after: int, as_json: JsonOption = False) -> None:
    """What changed between two versions of NAME."""
    with client() as c:
        result = c.constitutions.diff(name, before, after)
    if as_json:
        emit_json(result)
        return
    data = result.diff.model_dump(mode="json")
    console.print(f"[bold]{name}[/bold] {before} -> {after}")
    rows = []
    for kind, change in data.items():
        if isinstance(change, dict):
            for what in ("added", "removed", "changed"):
                for item in change.get(what) or []:
                    text = (item.get("after") or item).get("text", "")
                    rows.append({"set": kind, "change": what, "id": item.get("id"), "text": text})
        elif change:
            rows.append({"set": kind.removesuffix("_changed"), "change": "changed"})
    if rows:
        table(rows, ["set", "change", "id", "text"], as_json=False)
    else:
        console.print("no change")
