"""Progress bars over jobs' items, polled from the API."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from charter.client import CharterClient
from charter.core.jobs import TERMINAL_STATES

FINAL = {"completed", "cancelled"}


def watch_jobs(
    client: CharterClient, job_ids: list[str], *, poll: float = 1.0, console: Console | None = None
) -> list[dict[str, Any]]:
    """Follow jobs until each is completed or cancelled; returns their last state."""
    jobs = [client.job(job_id) for job_id in job_ids]
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        tasks = [
            progress.add_task(f"{job['type']} {job['id'][:8]}", total=job["item_count"], detail="")
            for job in jobs
        ]
        while True:
            for task, job in zip(tasks, jobs, strict=True):
                counts = job["counts"]
                done = sum(counts.get(s, 0) for s in TERMINAL_STATES)
                detail = " ".join(f"{k}={v}" for k, v in counts.items() if v and k != "queued")
                progress.update(task, completed=done, detail=detail)
            if all(job["status"] in FINAL for job in jobs):
                return jobs
            time.sleep(poll)
            jobs = [client.job(job["id"]) for job in jobs]


def watch_job(client: CharterClient, job_id: str, *, poll: float = 1.0) -> dict[str, Any]:
    return watch_jobs(client, [job_id], poll=poll)[0]
