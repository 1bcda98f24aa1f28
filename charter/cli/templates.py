"""``charter templates``: feedback and critique templates (shipped and the project's own)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from charter.cli.output import JsonOption, UsageError, client, console, details, emit_json, table
from charter.client import CharterClient

app = typer.Typer(help="Feedback and critique templates.", no_args_is_help=True)

CritiqueOption = Annotated[
    bool, typer.Option("--critique", help="Critique templates (SL-CAI), not feedback ones.")
]


def _group(c: CharterClient, critique: bool) -> Any:
    return c.critique_templates if critique else c.templates


@app.command("push")
def push(
    path: Annotated[
        Path,
        typer.Argument(help="A YAML or JSON template (TemplateCreate or CritiqueTemplateCreate)."),
    ],
    critique: CritiqueOption = False,
    as_json: JsonOption = False,
) -> None:
    """Push a template; identical content keeps the existing version."""
    import yaml

    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(spec, dict):
        raise UsageError(f"{path}: a template is a mapping of its fields")
    with client() as c:
        template = _group(c, critique).push(spec)
    if as_json:
        emit_json(template)
        return
    state = "new version" if template.created else "unchanged"
    console.print(f"{template.ref} ({state}, sha256 {template.sha256[:12]})")


@app.command("list")
def list_(critique: CritiqueOption = False, as_json: JsonOption = False) -> None:
    with client() as c:
        rows = _group(c, critique).list()
    table(rows, ["ref", "built_in", "sha256", "created_at"], as_json=as_json)


@app.command("show")
def show(ref: str, critique: CritiqueOption = False, as_json: JsonOption = False) -> None:
    with client() as c:
        details(_group(c, critique).get(ref), as_json=as_json)
