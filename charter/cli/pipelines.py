"""``charter pipeline``: the whole recipe (SL-CAI, SFT, RL-CAI, PM, the policy runs and
an Elo evaluation) as one object the gateway advances stage by stage (docs/PIPELINES.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

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
    take,
)
from charter.cli.policy_evals import print_report
from charter.cli.progress import watch_pipeline
from charter.client import CharterClient, _plain

app = typer.Typer(
    help="Pipelines: SL-CAI -> SFT -> RL-CAI -> PM -> RL -> Elo, advanced stage by stage.",
    no_args_is_help=True,
)

Columns = list[str | tuple[str, Callable[[Any], Any]]]
STAGE_COLUMNS: Columns = [("stage", lambda s: s["name"]), "status", "attempt", "output", "error"]


def _spec(path: Path) -> dict[str, Any]:
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not YAML or JSON: {exc}") from exc
    if not isinstance(loaded, dict):
        raise UsageError(
            f"{path}: a mapping with base_model, constitution, prompts and a section per "
            "stage (see docs/PIPELINES.md)"
        )
    return loaded


def _progress(pipeline: dict[str, Any]) -> str:
    stages = pipeline["stages"]
    done = sum(s["status"] == "completed" for s in stages)
    return f"{done}/{len(stages)}"


def _line(pipeline: dict[str, Any], what: str = "") -> None:
    state = pipeline["state"]
    error = f": {pipeline['error']}" if pipeline.get("error") else ""
    console.print(
        f"pipeline {pipeline['id']} {state}{error} ({_progress(pipeline)} stages completed)"
        + (f"; {what}" if what else ""),
        highlight=False,
        soft_wrap=True,
    )


def _follow(c: CharterClient, pipeline_id: str, *, poll: float, as_json: bool) -> None:
    """Watch to a final state; completed: the Elo report; failed or cancelled: exit 1,
    with how to go on."""
    final = watch_pipeline(c, pipeline_id, poll=poll, console=errors)
    if final["state"] == "failed":
        raise Failure(
            f"pipeline {pipeline_id} failed: {final['error']}; once the cause is fixed, "
            f"`charter pipeline resume {pipeline_id}` goes on from there"
        )
    if final["state"] == "cancelled":
        raise Failure(
            f"pipeline {pipeline_id} was cancelled; `charter pipeline resume {pipeline_id}` "
            "goes on from there"
        )
    print_report(_plain(c.policy_evals.report(_elo(final))), as_json=as_json)


def _elo(pipeline: dict[str, Any]) -> str:
    """The policy evaluation of the pipeline's completed elo stage."""
    stage = next((s for s in pipeline["stages"] if s["name"] == "elo"), None)
    if stage is None or stage["status"] != "completed":
        status = stage["status"] if stage else "missing"
        raise Failure(
            f"pipeline {pipeline['id']}: its elo stage has not completed (it is {status}); "
            f"the report comes once it has (`charter pipeline status {pipeline['id']}`)"
        )
    return str(stage["policy_eval_id"] or stage["output"])


@app.command("run")
def run(
    spec: Annotated[
        Path,
        typer.Argument(
            help="YAML/JSON: base_model, constitution[, prompts] and a section per stage "
            "(the body of POST /v1/pipelines)."
        ),
    ],
    prompts: Annotated[
        str | None,
        typer.Option("--prompts", help="The red-team batch (overrides the spec's prompts)."),
    ] = None,
    rl_prompts: Annotated[
        str | None,
        typer.Option("--rl-prompts", help="The RL-CAI batch (overrides rl_prompts)."),
    ] = None,
    eval_prompts: Annotated[
        str | None,
        typer.Option("--eval-prompts", help="The Elo evaluation's batch (overrides eval_prompts)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A name for the pipeline.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    watch: Annotated[
        bool, typer.Option(help="Follow it stage by stage, then print the Elo report.")
    ] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls with --watch.")] = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Submit a pipeline; the gateway submits each stage once what it needs has completed."""
    body = _spec(spec)
    overrides = {
        "prompts": prompts, "rl_prompts": rl_prompts, "eval_prompts": eval_prompts,
        "name": name, "seed": seed,
    }  # fmt: skip
    body.update({k: v for k, v in overrides.items() if v is not None})
    if "prompts" not in body:
        raise UsageError("give --prompts ID, or prompts in the spec")
    with client() as c:
        pipeline = _plain(c.pipelines.create(body))
        if not watch:
            if as_json:
                emit_json(pipeline)
            else:
                names = ", ".join(s["name"] for s in pipeline["stages"])
                console.print(
                    f"pipeline {pipeline['id']}: {names}; {pipeline['state']}",
                    highlight=False, soft_wrap=True,
                )  # fmt: skip
            return
        if not as_json:
            errors.print(f"pipeline {pipeline['id']} submitted", highlight=False)
        _follow(c, pipeline["id"], poll=poll, as_json=as_json)


@app.command("list")
def list_(
    limit: Annotated[int | None, typer.Option(help="At most this many.")] = 20,
    as_json: JsonOption = False,
) -> None:
    """The project's pipelines, newest first."""
    with client() as c:
        rows = [_plain(p) for p in take(c.pipelines.list(), limit)]
    columns: Columns = [
        "id", "name", "state", ("stages", _progress), "error", "created_at", "advanced_at",
    ]  # fmt: skip
    table(rows, columns, as_json=as_json)


@app.command("status")
def status(pipeline_id: str, as_json: JsonOption = False) -> None:
    """Its state and each stage's current attempt: status, attempt, output, error."""
    with client() as c:
        pipeline = _plain(c.pipelines.get(pipeline_id))
    details_and_table(pipeline, "stages", STAGE_COLUMNS, as_json=as_json, skip=("spec",))


@app.command("watch")
def watch(
    pipeline_id: str,
    poll: Annotated[float, typer.Option(help="Seconds between polls.")] = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Follow a pipeline stage by stage until it ends; then the Elo report."""
    with client() as c:
        _follow(c, pipeline_id, poll=poll, as_json=as_json)


@app.command("attempts")
def attempts(pipeline_id: str, as_json: JsonOption = False) -> None:
    """Every attempt of every stage, oldest first (--json: with the inputs each read)."""
    with client() as c:
        rows = _plain(c.pipelines.stages(pipeline_id))
    columns: Columns = [
        ("stage", lambda s: s["name"]), "attempt", "status", "output", "error",
        "created_at", "finished_at",
    ]  # fmt: skip
    table(rows, columns, as_json=as_json)


@app.command("resume")
def resume(
    pipeline_id: str,
    watch: Annotated[bool, typer.Option(help="Follow it, then print the Elo report.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls with --watch.")] = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Go on after a failure or cancel: a failed run from its checkpoint, else a new attempt."""
    with client() as c:
        pipeline = _plain(c.pipelines.resume(pipeline_id))
        if watch:
            _follow(c, pipeline_id, poll=poll, as_json=as_json)
            return
    if as_json:
        emit_json(pipeline)
    else:
        _line(pipeline)


@app.command("rerun")
def rerun(
    pipeline_id: str,
    stage: Annotated[
        str,
        typer.Option("--from", help="Run this stage and every stage downstream of it again."),
    ],
    watch: Annotated[bool, typer.Option(help="Follow it, then print the Elo report.")] = False,
    poll: Annotated[float, typer.Option(help="Seconds between polls with --watch.")] = 5.0,
    as_json: JsonOption = False,
) -> None:
    """Supersede a stage and its dependants; they run again from the others' outputs."""
    with client() as c:
        pipeline = _plain(c.pipelines.rerun(pipeline_id, stage))
        if watch:
            _follow(c, pipeline_id, poll=poll, as_json=as_json)
            return
    if as_json:
        emit_json(pipeline)
        return
    again = [s["name"] for s in pipeline["stages"] if s["status"] == "superseded"]
    _line(pipeline, f"running again: {', '.join(again)}")


@app.command("cancel")
def cancel(pipeline_id: str, as_json: JsonOption = False) -> None:
    """Cancel the stages in flight; what finished stays (`resume` goes on)."""
    with client() as c:
        pipeline = _plain(c.pipelines.cancel(pipeline_id))
    if as_json:
        emit_json(pipeline)
    else:
        _line(pipeline)


@app.command("report")
def report(pipeline_id: str, as_json: JsonOption = False) -> None:
    """The elo stage's report: Elo per judge of base, SFT and each trained policy."""
    with client() as c:
        eval_id = _elo(_plain(c.pipelines.get(pipeline_id)))
        print_report(_plain(c.policy_evals.report(eval_id)), as_json=as_json)
