"""The asynchronous SDK against a live gateway: the same groups, awaited."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from charter.client import CharterClient
from charter.sdk import AsyncCharterClient, NotFound, models

SFT = [{"prompt": f"Say {i}.", "completion": f"{i}."} for i in range(9)]


def test_async_groups_pages_and_errors(
    gateway: Any, admin_key: str, default_document: dict[str, Any], proxy: Any
) -> None:
    async def main() -> None:
        async with AsyncCharterClient(proxy.url, admin_key) as sdk:
            pushed = await sdk.constitutions.push(json.dumps(default_document).encode())
            assert isinstance(pushed, models.ConstitutionVersionOut) and pushed.created
            batch = await sdk.batches.create([{"prompt": f"q{i}"} for i in range(5)])
            job = await sdk.jobs.submit(
                type="sl_cai", batch_id=batch.id, constitution="default", model="smollm2-135m"
            )
            assert isinstance(job, models.JobOut) and job.item_count == 5
            assert (await sdk.jobs.get(job.id)).id == job.id
            prompts = [p.prompt async for p in sdk.batches.prompts(batch.id, limit=2)]
            assert prompts == [f"q{i}" for i in range(5)]
            # Concurrent calls share the one AsyncClient.
            got = await asyncio.gather(*(sdk.batches.get(batch.id) for _ in range(4)))
            assert {b.id for b in got} == {batch.id}
            with pytest.raises(NotFound) as missing:
                await sdk.runs.get("nope")
            assert missing.value.field == "run_id" and missing.value.error == "not_found"
            assert (await sdk.jobs.cancel(job.id)).status == "cancelled"
            assert (await sdk.jobs.wait(job.id, timeout=5)).status == "cancelled"

    asyncio.run(main())
    assert len(proxy.requests("GET", "/v1/batches/")) == 3 + 4  # three pages, four gets


def test_async_upload_and_export_match_the_sync_client(
    gateway: Any, admin_key: str, tmp_path: Path
) -> None:
    source = tmp_path / "helpful.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in SFT))

    async def main() -> tuple[Any, dict[str, Any]]:
        async with AsyncCharterClient(gateway.url, admin_key) as sdk:
            version = await sdk.datasets.upload("helpful", source, "sft")
            exported = await sdk.datasets.export("helpful", tmp_path / "async.jsonl")
            listed = [d.ref async for d in sdk.datasets.list()]
            assert listed == ["helpful@1"]
            return version, exported

    version, exported = asyncio.run(main())
    assert isinstance(version, models.DatasetVersionOut) and version.row_count == len(SFT)
    assert exported["rows"] == len(SFT) and exported["checksum"] == version.checksum
    with CharterClient(gateway.url, admin_key) as sync:
        again = sync.export_dataset("helpful@1", tmp_path / "sync.jsonl")
    assert (tmp_path / "async.jsonl").read_bytes() == (tmp_path / "sync.jsonl").read_bytes()
    digest = hashlib.sha256((tmp_path / "async.jsonl").read_bytes()).hexdigest()
    assert digest == again["checksum"] == version.checksum
