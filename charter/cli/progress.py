"""Progress bars (with rate and time left) over jobs, runs, transfers and pipelines."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from charter.client import CharterClient, _plain
from charter.core.jobs import FINAL_JOB_STATUSES, TERMINAL_STATES, ItemState
from charter.sdk.api import PIPELINE_FINAL, POLICY_EVAL_FINAL
from charter.sdk.uploads import ProgressCallback


class RateColumn(ProgressColumn):
    """Units per second, from rich's moving estimate."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(
            "" if speed is None else f"{speed:,.1f} {self.unit}/s", style="progress.data.speed"
        )


def _counting(unit: str) -> tuple[ProgressColumn, ...]:
    return (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[detail]}"),
    )


def watch_jobs(
    client: CharterClient, job_ids: list[str], *, poll: float = 1.0, console: Console | None = None
) -> list[dict[str, Any]]:
    """Follow jobs until each is completed or cancelled; returns their last state."""
    jobs = [client.job(job_id) for job_id in job_ids]
    with Progress(*_counting("items"), console=console) as progress:
        tasks = [
            progress.add_task(f"{job['type']} {job['id'][:8]}", total=job["item_count"], detail="")
            for job in jobs
        ]
        while True:
            for task, job in zip(tasks, jobs, strict=True):
                counts = job["counts"]
                done = sum(counts.get(s, 0) for s in TERMINAL_STATES)
                detail = " ".join(
                    f"{k}={v}" for k, v in counts.items() if v and k != ItemState.QUEUED
                )
                progress.update(task, completed=done, detail=detail)
            if all(job["status"] in FINAL_JOB_STATUSES for job in jobs):
                return jobs
            time.sleep(poll)
            jobs = [client.job(job["id"]) for job in jobs]


def watch_policy_eval(
    client: CharterClient, eval_id: str, *, poll: float = 2.0, console: Console | None = None
) -> dict[str, Any]:
    """Follow a policy evaluation (its generations, then its comparisons) to its end."""
    with Progress(*_counting("items"), console=console) as progress:
        task = progress.add_task("policy evaluation", total=None, detail="")
        while True:
            evaluation = _plain(client.policy_evals.get(eval_id))
            progress.update(
                task,
                total=evaluation["items_total"],
                completed=evaluation["items_finished"],
                detail=evaluation["stage"],
            )
            if evaluation["status"] in POLICY_EVAL_FINAL:
                return evaluation  # type: ignore[no-any-return]
            time.sleep(poll)


STAGE_STYLES = {
    "pending": "dim",
    "submitted": "cyan",
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "superseded": "dim",
}


def _utc(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _elapsed(stage: dict[str, Any], now: datetime) -> str:
    if not stage.get("created_at"):
        return ""
    began = _utc(stage["created_at"])
    ended = _utc(stage["finished_at"]) if stage.get("finished_at") else now
    seconds = max(0, int((ended - began).total_seconds()))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def pipeline_table(pipeline: dict[str, Any]) -> Table:
    """One line per stage: its status (a spinner while submitted), attempt, what it made
    (or why it failed) and how long it took."""
    now = datetime.now(UTC)
    out = Table(
        "stage", "status", "attempt", "output", "elapsed",
        title=f"pipeline {pipeline['id']} {pipeline['state']}", title_justify="left",
    )  # fmt: skip
    for stage in pipeline["stages"]:
        status = Text(stage["status"], style=STAGE_STYLES.get(stage["status"], ""))
        made = stage["output"] or stage["job_id"] or stage["run_id"] or stage["policy_eval_id"]
        if stage["status"] == "failed" and stage["error"]:
            shown = Text(stage["error"], style="red")
        else:
            shown = Text(made or "")
        out.add_row(
            stage["name"],
            Spinner("dots", text=status) if stage["status"] == "submitted" else status,
            str(stage["attempt"] or ""),
            shown,
            _elapsed(stage, now),
        )
    return out


def watch_pipeline(
    client: CharterClient, pipeline_id: str, *, poll: float = 5.0, console: Console | None = None
) -> dict[str, Any]:
    """Follow a pipeline to a final state (completed, failed or cancelled), its stages'
    lines updated each poll; returns the pipeline as it ended."""
    pipeline = _plain(client.pipelines.get(pipeline_id))
    with Live(pipeline_table(pipeline), console=console, refresh_per_second=4) as live:
        while pipeline["state"] not in PIPELINE_FINAL:
            time.sleep(poll)
            pipeline = _plain(client.pipelines.get(pipeline_id))
            live.update(pipeline_table(pipeline))
    if not live.console.is_terminal:  # a file sees the last display: end its line
        live.console.line()
    return pipeline  # type: ignore[no-any-return]


def watch_job(client: CharterClient, job_id: str, *, poll: float = 1.0) -> dict[str, Any]:
    return watch_jobs(client, [job_id], poll=poll)[0]


@contextmanager
def transfer(description: str, *, console: Console | None = None) -> Iterator[ProgressCallback]:
    """A bar for an upload or export: bytes (size, speed) or rows (count, rate), with
    time left when the total is known. Yields the SDK's progress callback."""
    progress: Progress | None = None
    task = None

    def update(done: int, total: int | None, unit: str) -> None:
        nonlocal progress, task
        if progress is None:
            columns = (
                (
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    TextColumn("eta"),
                    TimeRemainingColumn(),
                )
                if unit == "B"
                else _counting(unit)
            )
            progress = Progress(*columns, console=console, transient=False)
            progress.start()
            task = progress.add_task(description, total=total, detail="")
        assert task is not None
        progress.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if progress is not None:
            progress.stop()


def watch_run(
    client: CharterClient, run_id: str, *, poll: float = 2.0, console: Console | None = None
) -> dict[str, Any]:
    """Follow a run until it is final: a bar over its epochs (TRL reports ``epoch``
    with its metrics, ``num_train_epochs`` is in the config), with the rate, time
    left and the latest metrics."""
    from charter.core.jobs import FINAL_RUN_STATUSES

    run = client.run(run_id)
    epochs = (run.get("config") or {}).get("num_train_epochs")
    total = float(epochs) if isinstance(epochs, int | float) and epochs > 0 else None
    with Progress(*_counting("epochs"), console=console) as progress:
        task = progress.add_task(f"{run['type']} {run['id'][:8]}", total=total, detail="")
        while True:
            metrics = run.get("last_metrics") or {}
            shown = " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch")
            progress.update(
                task,
                completed=float(metrics.get("epoch", 0.0)),
                detail=f"{run['status']} {shown}".strip(),
            )
            if run["status"] in FINAL_RUN_STATUSES:
                return run
            time.sleep(poll)
            run = client.run(run_id)
