"""``client.pipelines`` against a live gateway whose workers serve run models: typed
answers, an idempotent create, and ``wait`` on the pipeline's ``state``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from charter.client import CharterClient
from charter.embedded import GatewayThread
from charter.sdk import AsyncCharterClient, BadRequest, models
from tests.gateway.test_pipelines_api import WORKER_MODELS


@pytest.fixture
def served(
    make_settings: Callable[..., Any], engine: Any, admin_key: str, default_document: Any
) -> Iterator[GatewayThread]:
    with GatewayThread(make_settings(worker_models=WORKER_MODELS)) as gateway:
        with CharterClient(gateway.url, admin_key) as client:
            client.constitutions.push(json.dumps(default_document).encode())
        yield gateway


@pytest.fixture
def sdk(served: GatewayThread, admin_key: str) -> Iterator[CharterClient]:
    with CharterClient(served.url, admin_key) as client:
        yield client


def test_create_get_list_cancel_wait_and_resume(
    sdk: CharterClient, served: GatewayThread, admin_key: str
) -> None:
    batch = sdk.batches.create([{"prompt": f"Question {i}?"} for i in range(3)], name="red")
    body = {"base_model": "smollm2", "constitution": "default", "prompts": batch.id}
    created = sdk.pipelines.create(body, idempotency_key="pipeline-1", name="sdk")
    assert isinstance(created, models.PipelineOut)
    assert (created.name, created.state, created.spec["constitution"]) == (
        "sdk", "active", "default@1",
    )  # fmt: skip
    assert [s.name for s in created.stages][-2:] == ["ppo", "elo"]  # ppo if none is asked
    again = sdk.pipelines.create(body, idempotency_key="pipeline-1", name="sdk")
    assert again.id == created.id  # the first answer, replayed
    assert [p.id for p in sdk.pipelines.list()] == [created.id]
    assert sdk.pipelines.get(created.id).stages[0].status == "pending"
    assert sdk.pipelines.stages(created.id) == []  # no attempt yet

    cancelled = sdk.pipelines.cancel(created.id)
    assert cancelled.state == "cancelled"
    assert sdk.pipelines.wait(created.id, timeout=5, poll=0.05).state == "cancelled"
    resumed = sdk.pipelines.resume(created.id)
    assert resumed.state == "active"
    assert sdk.pipelines.rerun(created.id, "sft").state == "active"
    with pytest.raises(BadRequest) as refused:
        sdk.pipelines.rerun(created.id, "rloo")  # not one of this pipeline's stages
    assert refused.value.field == "body.stage"
    # An active pipeline is not final: wait answers it as it stands after the timeout.
    assert sdk.pipelines.wait(created.id, timeout=0.1, poll=0.05).state == "active"

    async def follow() -> Any:
        async with AsyncCharterClient(served.url, admin_key) as a:
            await a.pipelines.cancel(created.id)
            return await a.pipelines.wait(created.id, timeout=5, poll=0.05)

    assert asyncio.run(follow()).state == "cancelled"
