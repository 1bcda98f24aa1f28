"""``charter collective``: public input, its opinion groups, and the constitution drafted
from what every group agreed on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from charter.cli.output import JsonOption, UsageError, client, console, emit_json, table
from charter.cli.progress import watch_jobs

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


Statements = Annotated[
    list[str] | None,
    typer.Option(
        "--statement",
        help="A statement id to draft from (repeatable, in order); default: the candidates.",
    ),
]
WordingJob = Annotated[
    str | None, typer.Option(help="A finished wording job whose answers word the principles.")
]
WordingFile = Annotated[
    Path | None,
    typer.Option(
        "--wording", help="YAML/JSON: statement id -> {comparison, critique, revision}, your edits."
    ),
]


def _wording(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    import yaml

    try:
        loaded = yaml.safe_load(_text(path))
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not YAML or JSON ({exc})") from exc
    if not isinstance(loaded, dict):
        raise UsageError(f"{path}: a mapping of statement id -> {{comparison, critique, revision}}")
    return {str(k): v for k, v in loaded.items()}


def _draft_body(
    name: str, statement: list[str] | None, wording_job: str | None, wording: Path | None,
    min_votes: int | None, max_groups: int | None, seed: int | None,
    min_group_agreement: float | None,
) -> dict[str, Any]:  # fmt: skip
    return {
        "name": name, "statements": statement or None, "min_votes": min_votes,
        "max_groups": max_groups, "seed": seed, "min_group_agreement": min_group_agreement,
        "wording_job": wording_job, "wording": _wording(wording),
    }  # fmt: skip


@app.command("draft")
def draft(
    ref: Annotated[str, typer.Argument(help="name or name@version.")],
    name: Annotated[str, typer.Option(help="The constitution's name.")],
    statement: Statements = None,
    wording_job: WordingJob = None,
    wording: WordingFile = None,
    min_votes: MinVotes = None,
    max_groups: MaxGroups = None,
    seed: Seed = None,
    min_group_agreement: Agreement = None,
) -> None:
    """Print the constitution a publish with these options would make (YAML), to review;
    nothing is stored."""
    import yaml

    body = _draft_body(
        name, statement, wording_job, wording, min_votes, max_groups, seed, min_group_agreement
    )
    with client() as c:
        preview = c.public_inputs.draft(ref, **body)
    document = preview.constitution
    typer.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100), nl=False)


@app.command("word")
def word(
    ref: Annotated[str, typer.Argument(help="name or name@version.")],
    constitution: Annotated[
        str, typer.Option(help="A constitution drafted from REF (name@version): its statements.")
    ],
    model: Annotated[str | None, typer.Option(help="The model that words them.")] = None,
    watch: Annotated[bool, typer.Option(help="Follow the job until it ends.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Ask a model to word the statements as principles (a generate job)."""
    with client() as c:
        job = c.public_inputs.wording_job(ref, constitution, model)
        if watch:
            watch_jobs(c, [job.id], console=console)
    if as_json:
        emit_json(job)
        return
    console.print(
        f"job {job.id} ({job.item_count} prompts); then: charter collective publish {ref} "
        f"--name NAME --wording-job {job.id} [--wording EDITS.yaml]"
    )


@app.command("publish")
def publish(
    ref: Annotated[str, typer.Argument(help="name or name@version.")],
    name: Annotated[str, typer.Option(help="The constitution's name.")],
    statement: Statements = None,
    wording_job: WordingJob = None,
    wording: WordingFile = None,
    min_votes: MinVotes = None,
    max_groups: MaxGroups = None,
    seed: Seed = None,
    min_group_agreement: Agreement = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a constitution version drafted from the statements every group agreed on."""
    body = _draft_body(
        name, statement, wording_job, wording, min_votes, max_groups, seed, min_group_agreement
    )
    with client() as c:
        result = c.public_inputs.publish(ref, **body)
    if as_json:
        emit_json(result)
        return
    state = "new version" if result.created else "unchanged"
    console.print(f"{result.constitution} ({state}) from {len(result.statements)} statement(s):")
    for s in result.statements:
        console.print(f"  {s.id}  consensus {s.consensus:.3f}  {s.text}", highlight=False)
