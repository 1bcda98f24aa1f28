"""``charter collective``: public input, its opinion groups, and the constitution drafted
from what every group agreed on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from charter.cli.output import JsonOption, UsageError, client, console, emit_json, table

app = typer.Typer(
    help="Collective constitutions: public statements and votes.", no_args_is_help=True
)

MinVotes = Annotated[int | None, typer.Option(help="Votes a participant needs to be grouped.")]
MaxGroups = Annotated[int | None, typer.Option(help="Most opinion groups tried (2..this).")]
Seed = Annotated[int | None, typer.Option(help="Seed of PCA and k-means.")]
Agreement = Annotated[
    float | None, typer.Option(help="A candidate: every group's P(agree) at least this.")
]


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: {exc}") from exc


def upload(path: Path, statements: Path | None, comments: Path | None) -> dict[str, Any]:
    """The request body for ``path``: a JSON document, a votes CSV with ``--statements``,
    or a Polis participants-votes.csv with ``--comments``."""
    if statements is not None and comments is not None:
        raise UsageError("give --statements (a votes CSV) or --comments (a Polis export), not both")
    if statements is not None:
        return {"format": "csv", "votes": _text(path), "statements": _text(statements)}
    if comments is not None:
        return {"format": "polis", "participants_votes": _text(path), "comments": _text(comments)}
    if path.suffix.lower() != ".json":
        raise UsageError(
            f"{path}: a .json document, or a votes CSV with --statements FILE, or a Polis "
            "participants-votes.csv with --comments FILE"
        )
    try:
        document = json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise UsageError(f"{path}: a JSON object with 'statements' and 'votes'")
    return {"format": "json", **document}


@app.command("push")
def push(
    name: Annotated[str, typer.Argument(help="The public input's name.")],
    path: Annotated[
        Path,
        typer.Argument(help="A JSON document, a votes CSV, or a Polis participants-votes.csv."),
    ],
    statements: Annotated[
        Path | None, typer.Option(help="The statements CSV of a votes CSV.")
    ] = None,
    comments: Annotated[Path | None, typer.Option(help="A Polis export's comments.csv.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Push statements and votes; the same input as the latest version keeps that version."""
    with client() as c:
        row = c.public_inputs.push(name, upload(path, statements, comments))
    if as_json:
        emit_json(row)
        return
    state = "new version" if row.created else "unchanged"
    console.print(
        f"{row.ref} ({state}: {row.participant_count} participants, {row.statement_count} "
        f"statements, {row.vote_count} votes, sha256 {row.content_hash[:12]})"
    )


@app.command("list")
def listing(as_json: JsonOption = False) -> None:
    with client() as c:
        rows = c.public_inputs.list()
    columns = ["ref", "source_format", "participant_count", "statement_count", "vote_count"]
    table(rows, [*columns, "created_at"], as_json=as_json)


@app.command("analyse")
def analyse(
    ref: Annotated[str, typer.Argument(help="name or name@version.")],
    min_votes: MinVotes = None,
    max_groups: MaxGroups = None,
    seed: Seed = None,
    min_group_agreement: Agreement = None,
    as_json: JsonOption = False,
) -> None:
    """Opinion groups, then the statements by consensus (candidates marked)."""
    with client() as c:
        result = c.public_inputs.analysis(
            ref, min_votes=min_votes, max_groups=max_groups, seed=seed,
            min_group_agreement=min_group_agreement,
        )  # fmt: skip
    if as_json:
        emit_json(result)
        return
    sizes = ", ".join(str(g.size) for g in result.groups)
    console.print(
        f"{result.public_input}: {result.k} group(s) of {sizes} among {result.grouped} "
        f"participants ({result.excluded} left out for voting too little)"
    )

    def mark(s: Any) -> str:
        return "candidate" if s.candidate else "divisive" if s.divisive else ""

    def agreement(s: Any) -> str:
        return " ".join(f"{g.p_agree:.2f}" for g in s.groups)

    table(
        result.statements,
        ["id", ("consensus", lambda s: f"{s.consensus:.3f}"), ("groups agree", agreement),
         ("divisiveness", lambda s: f"{s.divisiveness:.2f}"), ("", mark), "text"],
        as_json=False,
    )  # fmt: skip


@app.command("publish")
def publish(
    ref: Annotated[str, typer.Argument(help="name or name@version.")],
    name: Annotated[str, typer.Option(help="The constitution's name.")],
    statement: Annotated[
        list[str] | None,
        typer.Option(
            help="A statement id to draft from (repeatable, in order); default: the candidates."
        ),
    ] = None,
    min_votes: MinVotes = None,
    max_groups: MaxGroups = None,
    seed: Seed = None,
    min_group_agreement: Agreement = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a constitution version drafted from the statements every group agreed on."""
    body = {
        "name": name, "statements": statement or None, "min_votes": min_votes,
        "max_groups": max_groups, "seed": seed, "min_group_agreement": min_group_agreement,
    }  # fmt: skip
    with client() as c:
        result = c.public_inputs.publish(ref, **body)
    if as_json:
        emit_json(result)
        return
    state = "new version" if result.created else "unchanged"
    console.print(f"{result.constitution} ({state}) from {len(result.statements)} statement(s):")
    for s in result.statements:
        console.print(f"  {s.id}  consensus {s.consensus:.3f}  {s.text}", highlight=False)
