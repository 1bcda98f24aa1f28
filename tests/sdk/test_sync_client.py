"""The synchronous SDK against a live gateway: typed models, every page, errors."""

from __future__ import annotations

from typing import Any

import pytest

from charter.client import CharterClient
from charter.sdk import BadRequest, CharterAPIError, Forbidden, NotFound, models
from charter.sdk.api import JobItem, Jobs

ROWS = [{"prompt": f"Question {i}?"} for i in range(7)]


@pytest.fixture
def sdk(gateway: Any, admin_key: str) -> Any:
    with CharterClient(gateway.url, admin_key) as client:
        yield client


def _setup(sdk: CharterClient, default_document: dict[str, Any]) -> models.BatchOut:
    import json

    sdk.constitutions.push(json.dumps(default_document).encode())
    return sdk.batches.create(ROWS, name="seven")


def test_typed_answers_and_the_flat_methods_agree(
    sdk: CharterClient, default_document: dict[str, Any]
) -> None:
    batch = _setup(sdk, default_document)
    assert isinstance(batch, models.BatchOut) and batch.row_count == 7
    job = sdk.jobs.submit(
        type="sl_cai", batch_id=batch.id, model="smollm2-135m", constitution="default"
    )
    assert isinstance(job, models.JobOut)
    assert job.status == "queued" and job.item_count == 7
    fetched = sdk.jobs.get(job.id)
    assert fetched.id == job.id and fetched.batch_id == batch.id
    # The flat methods kept from before the groups answer the same, as plain JSON.
    assert sdk.job(job.id) == fetched.model_dump(mode="json")
    assert [c.name for c in sdk.constitutions.list()] == ["default"]
    assert sdk.constitutions()[0]["name"] == "default"
    assert sdk.constitutions.get("default@1").content["name"] == "default"
    cancelled = sdk.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    assert sdk.jobs.wait(job.id, timeout=5).status == "cancelled"


def test_paged_iterators_follow_every_page(
    sdk: CharterClient, default_document: dict[str, Any], proxy: Any, admin_key: str
) -> None:
    batch = _setup(sdk, default_document)
    jobs = [
        sdk.jobs.submit(
            type="sl_cai", batch_id=batch.id, model="smollm2-135m", constitution="default"
        )
        for _ in range(3)
    ]
    with CharterClient(proxy.url, admin_key) as through:
        prompts = list(through.batches.prompts(batch.id, limit=2))
        assert [p.position for p in prompts] == list(range(7))
        assert [p.prompt for p in prompts] == [r["prompt"] for r in ROWS]
        # 7 prompts 2 by 2: four pages, each after the cursor of the one before.
        pages = through_pages = proxy.requests("GET", f"/v1/batches/{batch.id}/prompts")
        assert len(pages) == 4
        assert "cursor" not in pages[0].path and all("cursor=" in p.path for p in pages[1:])
        listed = list(through.jobs.list(limit=1))
        assert [j.id for j in listed] == [j.id for j in reversed(jobs)]  # newest first
        assert len(proxy.requests("GET", "/v1/jobs?")) == 3
        items = list(through.jobs.items(jobs[0].id, limit=3))
        assert len(items) == 7 and all(isinstance(i, JobItem) for i in items)
        assert len(through_pages) == 4


def test_errors_carry_the_body(
    sdk: CharterClient, gateway: Any, issue: Any, default_document: dict[str, Any]
) -> None:
    with pytest.raises(NotFound) as missing:
        sdk.jobs.get("nope")
    error = missing.value
    assert isinstance(error, CharterAPIError) and error.status_code == 404
    assert error.error == "not_found" and error.field == "job_id"
    assert "nope" in error.detail or "job" in error.detail
    assert error.body["field"] == "job_id" and error.request_id

    batch = _setup(sdk, default_document)
    with pytest.raises(BadRequest) as invalid:
        sdk.jobs.submit(
            type="sl_cai",
            batch_id=batch.id,
            model="smollm2-135m",
            constitution="default",
            params={"rounds": 999},
        )
    assert invalid.value.status_code == 422 and invalid.value.field
    assert "rounds" in invalid.value.field

    reader = issue("sdk", ("read",)).key
    with CharterClient(gateway.url, reader) as read_only, pytest.raises(Forbidden) as denied:
        read_only.jobs.submit(type="sl_cai", batch_id=batch.id, constitution="default")
    assert denied.value.status_code == 403 and denied.value.error == "forbidden"


def test_calls_are_descriptions_shared_by_both_clients() -> None:
    call = Jobs().results("j1", limit=10)
    assert (call.method, call.path, call.paged) == ("GET", "/v1/jobs/j1/results", True)
    assert call.at("abc").params == {"limit": 10, "cursor": "abc"}
    assert Jobs().submit(type="sl_cai").json == {"type": "sl_cai"}
