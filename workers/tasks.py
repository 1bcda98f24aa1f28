"""Celery tasks: thin wrappers over plain functions, named explicitly."""

from __future__ import annotations

import os

from charter.queue import RUN_CHUNK
from workers import shutdown
from workers.celery_app import app, give_back, runner
from workers.runner import ChunkReport


@app.task(name=RUN_CHUNK, acks_late=True, reject_on_worker_lost=True)
def run_chunk(job_id: str, chunk: int) -> dict[str, int]:
    # The worker stopping: the chunk goes back to the queue, published again, and this
    # delivery is acknowledged (its message would only find the chunk taken).
    return shutdown.run_interruptible(
        lambda: _report(runner().run_chunk(job_id, chunk)),
        lambda: {"released": give_back(os.getpid(), (job_id, chunk)), "interrupted": 1},
    )


def _report(report: ChunkReport) -> dict[str, int]:
    return {
        "claimed": report.claimed,
        "labelled": report.labelled,
        "abstained": report.abstained,
        "released": report.released,
        "fenced": report.fenced,
    }
