"""A progress bar over a job's items, polled from the API."""

from __future__ import annotations

import time
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from charter.client import CharterClient
from charter.core.jobs import TERMINAL_STATES


def watch_job(client: CharterClient, job_id: str, *, poll: float = 1.0) -> dict[str, Any]:
    job = client.job(job_id)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task(f"{job['type']} {job_id[:8]}", total=job["item_count"], detail="")
        while True:
            counts = job["counts"]
            finished = sum(counts.get(s, 0) for s in TERMINAL_STATES)
            detail = " ".join(f"{k}={v}" for k, v in counts.items() if v and k != "queued")
            progress.update(task, completed=finished, detail=detail)
            if job["status"] in {"completed", "cancelled"}:
                return job
            time.sleep(poll)
            job = client.job(job_id)
