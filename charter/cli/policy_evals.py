"""``charter policy-eval``: policies rated by Elo from pairwise judge comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from charter.cli.output import (
    Failure,
    JsonOption,
    UsageError,
    client,
    console,
    details_and_table,
    emit_json,
    errors,
    table,
)
from charter.cli.progress import watch_policy_eval
from charter.client import _plain

app = typer.Typer(
    help="Policy evaluation: Elo per judge from pairwise comparisons of policies' answers.",
    no_args_is_help=True,
)


def _spec(path: Path) -> dict[str, Any]:
    import yaml

    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise UsageError(f"{path}: a mapping with policies and judges (see docs/EVALUATION.md)")
    return loaded


@app.command("run")
def run(
    spec: Annotated[
        Path, typer.Argument(help="YAML/JSON: policies, judges[, anchor, plot, bootstrap].")
    ],
    batch: Annotated[
        str | None, typer.Option(help="The prompt batch (overrides the spec's batch_id).")
    ] = None,
    name: Annotated[str | None, typer.Option(help="A name for the evaluation.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    watch: Annotated[bool, typer.Option(help="Follow it, then print the report.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls with --watch.")] = 2.0,
    as_json: JsonOption = False,
) -> None:
    """Each policy answers the batch, then each judge compares every pair of answers."""
    body = _spec(spec)
    for key, value in (("batch_id", batch), ("name", name), ("seed", seed)):
        if value is not None:
            body[key] = value
    if "batch_id" not in body:
        raise UsageError("give --batch ID, or batch_id in the spec")
    with client() as c:
        evaluation = _plain(c.policy_evals.create(body))
        if not watch:
            if as_json:
                emit_json(evaluation)
            else:
                console.print(
                    f"policy evaluation {evaluation['id']}: {len(evaluation['policies'])} "
                    f"policies, {len(evaluation['judges'])} judges; generating"
                )
            return
        final = watch_policy_eval(c, evaluation["id"], poll=poll, console=errors)
        if final["status"] == "failed":
            raise Failure(f"policy evaluation {final['id']} failed: {final['error']}")
        print_report(_plain(c.policy_evals.report(evaluation["id"])), as_json=as_json)


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(help="At most this many.")] = 20,
    as_json: JsonOption = False,
) -> None:
    with client() as c:
        rows = [
            _plain(r) for r, _ in zip(c.policy_evals.list(limit=limit), range(limit), strict=False)
        ]
    columns = [
        "id", "name", "stage", "status",
        ("policies", lambda r: ", ".join(p["name"] for p in r["policies"])),
        ("judges", lambda r: ", ".join(j["name"] for j in r["judges"])),
        "items_finished", "items_total", "created_at",
    ]  # fmt: skip
    table(rows, columns, as_json=as_json)


@app.command("status")
def status(eval_id: str, as_json: JsonOption = False) -> None:
    """Its stage, its jobs and their progress."""
    with client() as c:
        evaluation = _plain(c.policy_evals.get(eval_id))
    columns = ["role", "name", "job_id", "status", "counts"]
    details_and_table(evaluation, "jobs", columns, as_json=as_json, skip=("policies", "judges"))


@app.command("cancel")
def cancel(eval_id: str, as_json: JsonOption = False) -> None:
    """Cancel its unfinished jobs; what is labelled stays and is reported."""
    with client() as c:
        evaluation = _plain(c.policy_evals.cancel(eval_id))
    if as_json:
        emit_json(evaluation)
        return
    console.print(f"policy evaluation {eval_id}: {evaluation['status']}")


@app.command("report")
def report(eval_id: str, as_json: JsonOption = False) -> None:
    """Elo with bootstrap intervals per judge, and each pair's head-to-head."""
    with client() as c:
        print_report(_plain(c.policy_evals.report(eval_id)), as_json=as_json)


@app.command("plot")
def plot(
    eval_id: str,
    out: Annotated[Path, typer.Option(help="Where to write the PNG.")] = Path("elo.png"),
) -> None:
    """The plot: one judge's Elo against another's, with intervals, as PNG."""
    with client() as c:
        image = c.policy_evals.plot(eval_id)
    out.write_bytes(image)
    console.print(f"wrote {out} ({len(image):,} bytes)")


def print_report(data: dict[str, Any], *, as_json: bool) -> None:
    """A policy evaluation's report: per judge, Elo with intervals and the head-to-head
    shares (also ``charter pipeline report``'s, for its elo stage)."""
    if as_json:
        emit_json(data)
        return
    state = "complete" if data["complete"] else f"{data['status']}, partial"
    level = round(data["level"] * 100)
    answered = ", ".join(
        f"{name} {g['answered']}/{g['prompts']}" for name, g in data["generations"].items()
    )
    console.print(f"{data['name'] or data['id']} ({state}); answered: {answered}")
    for judge, result in data["judges"].items():
        scored = f"{result['scored']} comparisons, {result['abstained']} abstained"
        if not result["ratings"]:
            console.print(f"{judge}: {scored}; no ratings: {result['rating_error']}")
            continue
        ratings = Table(
            "policy", "Elo", f"{level}% interval", "comparisons", "wins",
            title=f"{judge} ({scored}; {data['anchor']} = 0)",
        )  # fmt: skip
        for r in result["ratings"]:
            ratings.add_row(
                r["policy"], f"{r['elo']:+.0f}", f"{r['low']:+.0f} to {r['high']:+.0f}",
                str(r["comparisons"]), f"{r['wins']:.1f}",
            )  # fmt: skip
        console.print(ratings)
        pairs = Table("a", "b", "comparisons", "a preferred", title=f"{judge}: head to head")
        for h in result["head_to_head"]:
            share = "-" if h["a_preferred"] is None else f"{h['a_preferred']:.2f}"
            pairs.add_row(h["a"], h["b"], str(h["comparisons"]), share)
        console.print(pairs)
