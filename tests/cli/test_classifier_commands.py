"""``charter classifier`` against a live gateway: ``data`` follows the two generate jobs
(run here by a scripted worker) and freezes the dataset; errors are a line and a status."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select

from charter.db.models import Job
from charter.db.session import session_factory
from tests.cli.test_commands import as_json, live, run  # noqa: F401 - live is a fixture
from tests.gateway.test_classifier_data_api import CLASSIFIED, _writer
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner


def _worker(engine: Any, settings: Any, stop: threading.Event) -> None:
    """Run every unfinished job's chunks, as a worker would."""
    runner = ChunkRunner(
        session_factory(engine), {"m": ScriptedEngine(model_name="m", responses=_writer)},
        settings, "w",
    )  # fmt: skip
    while not stop.is_set():
        with session_factory(engine)() as session:
            jobs = session.execute(
                select(Job.id, Job.chunk_count).where(Job.finished_at.is_(None))
            ).all()
        for job_id, chunks in jobs:
            for chunk in range(chunks):
                runner.run_chunk(job_id, chunk)
        time.sleep(0.1)


def test_data_follows_both_jobs_and_freezes_a_dataset(
    live: str,  # noqa: F811
    tmp_path: Path,
    engine: Any,
    settings: Any,
) -> None:
    document = tmp_path / "guarded.yaml"
    document.write_text(yaml.safe_dump(CLASSIFIED))
    assert "guarded@1" in run("constitutions", "push", str(document))
    stop = threading.Event()
    worker = threading.Thread(target=_worker, args=(engine, settings, stop), daemon=True)
    worker.start()
    try:
        made = as_json(
            "classifier", "data", "guard-data", "--constitution", "guarded", "--model", "m",
            "--per-category", "2", "--seed", "3",
        )  # fmt: skip
    finally:
        stop.set()
        worker.join(timeout=30)
    assert made["ref"] == "guard-data@1" and made["kind"] == "classifier"
    assert made["row_count"] > 0 and made["source"] == "classifier_data"


def test_errors_are_a_line_and_a_status(live: str) -> None:  # noqa: F811
    missing = run("classifier", "data", "x", "--constitution", "nowhere", "--model", "m", code=1)
    assert "not found" in missing
    unknown = run("classifier", "classify", "0" * 32, "--prompt", "hi", code=1)
    assert "not found" in unknown
