"""More concurrent clients than database connections and threadpool threads.

A request holds its pooled connection across several threadpool calls. Unbounded,
64 clients against 2+2 connections and AnyIO's 40 threads stall: every thread blocks
on the pool while the requests holding connections wait for a thread, until the
pool's timeout answers 500. ``Admission`` lets only as many requests in as the pool
has connections; the rest wait on the event loop, and all of them succeed.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, select

from charter.db.models import WorkItem
from charter.db.session import make_engine, session_factory
from charter.settings import Settings
from services.gateway.app import create_app

pytestmark = pytest.mark.postgres_only

CLIENTS = 64


@pytest.fixture
def small_pool(database_url: str, engine: Engine) -> Iterator[Engine]:
    # pool_timeout 5 s: without admission the stall would surface as 500s within the test
    small = make_engine(database_url, pool_size=2, pool_timeout=5)
    yield small
    small.dispose()


WAIT_SECONDS = 1.0
QUEUE_SECONDS = 60.0
"""The wait for the test that all clients succeed: what it checks is that queued requests
are all served (no stall, no pool timeout), not how fast a loaded CI machine serves 64."""


@pytest.fixture
def app(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], small_pool: Engine
) -> FastAPI:
    wait = getattr(request, "param", WAIT_SECONDS)
    return create_app(make_settings(admission_wait_seconds=wait), small_pool)


def test_admission_is_the_pool_size(app: FastAPI) -> None:
    assert app.state.admission.slots == 2
    assert app.state.admission.wait_seconds == WAIT_SECONDS


def test_a_saturated_database_answers_503_with_retry_after_not_a_hang(
    live_server: Any, api: Any, admin_headers: dict[str, str], engine: Engine
) -> None:
    """Both connections stuck (a lock held elsewhere blocks every key lookup): the two
    admitted requests wait for the lock, the others get 503 after ``WAIT_SECONDS``
    instead of queueing without end; once the lock goes, the admitted ones succeed."""
    api.push_default(admin_headers)

    async def load() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=live_server.url, headers=admin_headers, timeout=60
        ) as client:
            return list(await asyncio.gather(*(client.get("/v1/constitutions") for _ in range(8))))

    with engine.connect() as blocker:
        blocker.exec_driver_sql("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        release = threading.Timer(4 * WAIT_SECONDS, blocker.rollback)
        started = time.monotonic()
        release.start()
        responses = asyncio.run(load())
        release.join()
    elapsed = time.monotonic() - started
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200] + [503] * 6, [r.text for r in responses]
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.headers["Retry-After"].isdigit() for r in refused)
    assert all("database is saturated" in r.json()["detail"] for r in refused)
    assert elapsed < 30


@pytest.mark.parametrize("app", [QUEUE_SECONDS], indirect=True)
def test_more_clients_than_connections_and_threads_all_succeed(
    live_server: Any, api: Any, admin_headers: dict[str, str], engine: Engine
) -> None:
    api.push_default(admin_headers)
    batch = api.create_batch(admin_headers, [{"prompt": f"p{i}"} for i in range(4)], "b")["id"]
    spec = {"type": "sl_cai", "batch_id": batch, "constitution": "default", "model": "m"}

    async def load() -> tuple[list[httpx.Response], list[httpx.Response]]:
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(
            base_url=live_server.url, headers=admin_headers, limits=limits, timeout=60
        ) as client:
            first = await client.post("/v1/jobs", json=spec)
            assert first.status_code == 202, first.text
            job = first.json()["id"]
            submits = [
                client.post("/v1/jobs", json=spec, headers={"Idempotency-Key": str(uuid.uuid4())})
                for _ in range(CLIENTS // 2)
            ]
            reads = [client.get(f"/v1/jobs/{job}") for _ in range(CLIENTS // 2)]
            responses = await asyncio.gather(*submits, *reads)
            return list(responses[: CLIENTS // 2]), list(responses[CLIENTS // 2 :])

    submitted, read = asyncio.run(load())
    assert [r.status_code for r in submitted] == [202] * (CLIENTS // 2), submitted[0].text
    assert [r.status_code for r in read] == [200] * (CLIENTS // 2), read[0].text
    assert {r.json()["counts"]["queued"] for r in read} == {4}
    jobs = [r.json()["id"] for r in submitted]
    with session_factory(engine)() as session:
        items = session.scalar(
            select(func.count()).select_from(WorkItem).where(WorkItem.job_id.in_(jobs))
        )
    assert items == 4 * len(set(jobs)) == 4 * (CLIENTS // 2)
