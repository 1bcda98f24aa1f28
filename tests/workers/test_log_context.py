"""A worker's log lines carry the chunk they were logged for: ``job_id``, ``chunk`` and
the claimed ``item_ids`` (charter.log_format), and nothing once the chunk is done."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

from charter import log_format
from charter.db.models import Worker
from charter.db.session import session_factory
from workers.engines.faults import FaultyEngine
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner


def test_a_failing_chunk_logs_its_job_chunk_and_items(
    api: Any, admin_headers: dict[str, str], engine: Any, make_settings: Any
) -> None:
    sessions = session_factory(engine)
    with sessions() as s, s.begin():
        s.add(Worker(id="w1", hostname="h", pid=1, engine="scripted", models=["m"]))
    batch = api.create_batch(admin_headers, [{"prompt": "POISON"}, {"prompt": "fine"}])
    api.push_default(admin_headers)
    job = api.submit(admin_headers, batch_id=batch["id"], model="m", type="sl_cai")
    poisoned = FaultyEngine(ScriptedEngine(model_name="m"), poison="POISON")
    runner = ChunkRunner(sessions, {"m": poisoned}, make_settings(), "w1")

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log_format.formatter(json=True))
    logging.getLogger().addHandler(handler)
    try:
        runner.run_chunk(job["id"], 0)
        logging.getLogger("test").warning("after the chunk")
    finally:
        logging.getLogger().removeHandler(handler)

    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    [failed] = [r for r in lines if r["event"].startswith("chunk ") and "failed" in r["event"]]
    assert failed["job_id"] == job["id"] and failed["chunk"] == 0
    assert len(failed["item_ids"]) == 2 and "PoisonError" in failed["exception"]
    assert not {"job_id", "chunk", "item_ids"} & set(lines[-1])
