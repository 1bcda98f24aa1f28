"""Celery tasks: thin wrappers over plain functions, named explicitly."""

from __future__ import annotations

from charter.queue import RUN_CHUNK
from workers.celery_app import app, runner


@app.task(name=RUN_CHUNK, acks_late=True, reject_on_worker_lost=True)
def run_chunk(job_id: str, chunk: int) -> dict[str, int]:
    report = runner().run_chunk(job_id, chunk)
    return {
        "claimed": report.claimed,
        "labelled": report.labelled,
        "abstained": report.abstained,
        "released": report.released,
        "fenced": report.fenced,
    }
