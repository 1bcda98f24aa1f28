"""``charter eval``: gold sets, judge evaluations and their reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from charter.cli.output import (
    JsonOption,
    UsageError,
    client,
    console,
    details_and_table,
    emit_json,
    errors,
    parse_json,
    table,
)
from charter.cli.progress import watch_jobs
from charter.client import _plain
from charter.core import eval_plans

app = typer.Typer(help="Judge evaluation on gold sets.", no_args_is_help=True)
gold_app = typer.Typer(help="Gold sets: comparisons with a known answer.", no_args_is_help=True)
app.add_typer(gold_app, name="gold")


@gold_app.command("push")
def gold_push(
    name: Annotated[str, typer.Argument(help="The gold set's name.")],
    path: Annotated[
        Path,
        typer.Argument(
            help="JSONL: prompt|messages, response_a, response_b, answer[, p_gold][, category]."
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Push a gold set; the same rows as the latest version keep that version."""
    with client() as c:
        gold = c.gold_sets.push(name, path)
    if as_json:
        emit_json(gold)
        return
    state = "new version" if gold.created else "unchanged"
    console.print(f"{gold.ref} ({state}, {gold.row_count} rows, sha256 {gold.content_hash[:12]})")


@gold_app.command("list")
def gold_list(as_json: JsonOption = False) -> None:
    with client() as c:
        rows = c.gold_sets.list()
    table(rows, ["ref", "row_count", "categories", "content_hash", "created_at"], as_json=as_json)


def _configs(
    configs: Path | None, templates: list[str], constitution: str | None, model: str, extra: str
) -> list[dict[str, Any]]:
    """From a YAML/JSON list of configurations, or one per ``--template``."""
    if configs is not None:
        import yaml

        loaded = yaml.safe_load(configs.read_text(encoding="utf-8"))
        if not isinstance(loaded, list) or not all(isinstance(c, dict) for c in loaded):
            raise UsageError(f"{configs}: a list of judge configurations (mappings)")
        return loaded
    if constitution is None:
        raise UsageError("give --configs FILE, or --constitution (with --template, repeatable)")
    knobs = parse_json(extra, "--params") if extra else {}
    if not isinstance(knobs, dict):
        raise UsageError("--params is a JSON object of judge configuration fields")
    return [
        {"name": t, "model": model, "constitution": constitution, "feedback_template": t, **knobs}
        for t in (templates or ["charter-chat"])
    ]


@app.command("run")
def run(
    gold_set: Annotated[str, typer.Argument(help="name or name@version")],
    configs: Annotated[
        Path | None, typer.Option(help="YAML/JSON list of judge configurations.")
    ] = None,
    template: Annotated[
        list[str], typer.Option("--template", help="One configuration per template.")
    ] = [],  # noqa: B006 - typer reads the default
    constitution: Annotated[str | None, typer.Option(help="name or name@version")] = None,
    model: Annotated[str, typer.Option(help="The feedback model.")] = "smollm2",
    params: Annotated[
        str, typer.Option(help='More fields for every configuration, as JSON: {"swap": false}')
    ] = "",
    injection: Annotated[
        bool, typer.Option(help="Also score the attack suite's variants.")
    ] = False,
    attacks: Annotated[str, typer.Option(help="Comma-separated attack ids (default: all).")] = "",
    max_items: Annotated[int, typer.Option(help="Gold items that get the attacks.")] = 50,
    name: Annotated[str, typer.Option(help="A name for the evaluation.")] = "",
    seed: Annotated[int | None, typer.Option()] = None,
    watch: Annotated[bool, typer.Option(help="Follow it, then print the report.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Score a gold set with judge configurations (one compare job each)."""
    body: dict[str, Any] = {
        "gold_set": gold_set,
        "name": name,
        "configs": _configs(configs, template, constitution, model, params),
    }
    if injection:
        spec: dict[str, Any] = {"max_items": max_items}
        if attacks:
            spec["attacks"] = [a.strip() for a in attacks.split(",") if a.strip()]
        body["injection"] = spec
    if seed is not None:
        body["seed"] = seed
    with client() as c:
        evaluation = _plain(c.evals.create(body))
        if not watch:
            if as_json:
                emit_json(evaluation)
            else:
                console.print(
                    f"evaluation {evaluation['id']}: {len(evaluation['jobs'])} jobs, "
                    f"{evaluation['items_total']} items"
                )
            return
        watch_jobs(c, [j["job_id"] for j in evaluation["jobs"]], console=errors)
        _print_report(_plain(c.evals.report(evaluation["id"])), as_json=as_json)


@app.command("list")
def list_(
    limit: Annotated[int, typer.Option(help="At most this many.")] = 20,
    as_json: JsonOption = False,
) -> None:
    with client() as c:
        rows = [_plain(r) for r, _ in zip(c.evals.list(limit=limit), range(limit), strict=False)]
    columns = ["id", "name", "gold_set", "status", ("configs", lambda r: len(r["configs"]))]
    table(rows, [*columns, "items_finished", "items_total", "created_at"], as_json=as_json)


@app.command("status")
def status(eval_id: str, as_json: JsonOption = False) -> None:
    """An evaluation's jobs and their progress."""
    with client() as c:
        evaluation = _plain(c.evals.get(eval_id))
    columns = ["config", "variant", "job_id", "status", "counts"]
    details_and_table(evaluation, "jobs", columns, as_json=as_json, skip=("configs",))


@app.command("cancel")
def cancel(eval_id: str, as_json: JsonOption = False) -> None:
    """Cancel its unfinished jobs; what is labelled stays and is reported."""
    with client() as c:
        evaluation = _plain(c.evals.cancel(eval_id))
    if as_json:
        emit_json(evaluation)
        return
    console.print(f"evaluation {eval_id}: {evaluation['status']}")


@app.command("attacks")
def attacks_(as_json: JsonOption = False) -> None:
    """The injection suite."""
    with client() as c:
        rows = c.evals.attacks()
    table(rows, ["id", "family", "description"], as_json=as_json)


@app.command("report")
def report(
    eval_id: str,
    by: Annotated[
        str, typer.Option(help="Also break accuracy down by 'category' or 'principle'.")
    ] = "",
    as_json: JsonOption = False,
) -> None:
    """Accuracy, biases, calibration; paired differences; injection flips."""
    if by not in ("", "category", "principle"):
        raise UsageError("--by is 'category' or 'principle'")
    with client() as c:
        _print_report(_plain(c.evals.report(eval_id)), as_json=as_json, by=by)


def estimate_text(estimate: dict[str, Any] | None, interval: bool = True) -> str:
    """An estimate from a report as ``0.81 (0.74-0.87)``; ``-`` where there is none."""
    if not estimate or estimate.get("value") is None:
        return "-"
    text = f"{estimate['value']:.2f}"
    if interval and estimate.get("low") is not None:
        text += f" ({estimate['low']:.2f}-{estimate['high']:.2f})"
    return text


def _signed(estimate: dict[str, Any]) -> str:
    return "-" if estimate.get("value") is None else f"{estimate['value']:+.2f}"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


METRICS: tuple[tuple[str, Any], ...] = (
    ("answered", lambda m: f"{m['answered']}/{m['n']}"),
    ("accuracy, swap-averaged (95%)", lambda m: estimate_text(m["accuracy"])),
    ("accuracy, forward order", lambda m: estimate_text(m["accuracy_forward"])),
    ("accuracy, swapped order", lambda m: estimate_text(m["accuracy_swapped"])),
    ("orders disagree", lambda m: estimate_text(m["order_inconsistency"])),
    ("mean P(first shown)", lambda m: estimate_text(m["position_bias"])),
    ("longer response wins", lambda m: estimate_text(m["length_bias"]["longer_wins"])),
    ("abstained", lambda m: estimate_text(m["abstention"], False)),
    ("ECE", lambda m: _num(m["ece"])),
    ("log-loss", lambda m: estimate_text(m["log_loss"])),
)
"""The report's rows: one per statistic, one column per configuration."""


def _print_report(data: dict[str, Any], *, as_json: bool, by: str = "") -> None:
    if as_json:
        emit_json(data)
        return
    state = "complete" if data["complete"] else f"{data['status']}, partial"
    configs = data["configs"]
    metrics = Table("", *configs, title=f"{data['gold_set']}: judge accuracy ({state})")
    for label, show in METRICS:
        metrics.add_row(label, *(show(c["metrics"]) for c in configs.values()))
    console.print(metrics)
    for name, config in configs.items() if by else ():
        groups = config["metrics"][f"by_{by}"]
        grouped = Table(by, "answered", "accuracy (95%)", "mean P(first)", title=f"{name} by {by}")
        for group, m in groups.items():
            grouped.add_row(
                group,
                f"{m['answered']}/{m['n']}",
                estimate_text(m["accuracy"]),
                estimate_text(m["position_bias"]),
            )
        console.print(grouped)
    if data["comparisons"]:
        paired = Table(
            "first", "second", "accuracy diff (95%)", "on items", "first only", "second only",
            "McNemar p", title="Paired on the same gold items",
        )  # fmt: skip
        for row in data["comparisons"]:
            diff = "-" if row["value"] is None else f"{row['value']:+.2f}"
            if row["low"] is not None:
                diff += f" ({row['low']:+.2f} to {row['high']:+.2f})"
            paired.add_row(
                row["first"], row["second"], diff, str(row["both_answered"]),
                str(row["first_only"]), str(row["second_only"]), f"{row['mcnemar_p']:.3g}",
            )  # fmt: skip
        console.print(paired)
    injection = data.get("injection")
    if injection:
        payloads = f"{len(injection['attacks'])} payloads on {injection['gold_items']} gold items"
        for name, defences in injection["configs"].items():
            flips = Table(
                "defences", "flipped", "flip rate", "shift", "controls flipped", "shift",
                title=f"Injection: {name}, {payloads}",
            )  # fmt: skip
            for defence, stats in defences.items():
                attacked, control = stats["overall"], stats["control"]
                flips.add_row(
                    eval_plans.DEFENCE_NAMES.get(defence, defence),
                    f"{attacked['flipped']}/{attacked['clean_right']}",
                    estimate_text(attacked["flip_rate"], False), _signed(attacked["mean_shift"]),
                    f"{control['flipped']}/{control['clean_right']}", _signed(control["mean_shift"]),
                )  # fmt: skip
            console.print(flips)
