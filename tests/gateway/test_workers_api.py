"""``/v1/workers`` from its own domain (``services.gateway.workers``): the same URL,
operation and answer as when it lived with the jobs routes; the fleet comes newest
heartbeat first. (Listing and per-project counts: test_jobs_api.py.)"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from charter.db.models import Worker, utcnow
from charter.db.session import session_factory
from services.gateway.jobs import endpoints as jobs
from services.gateway.workers import endpoints


def test_the_route_lives_in_the_workers_domain(app: FastAPI) -> None:
    [route] = [r for r in endpoints.router.routes if isinstance(r, APIRoute)]
    assert (route.path, route.methods) == ("/v1/workers", {"GET"})
    assert not [r for r in jobs.router.routes if getattr(r, "path", "") == "/v1/workers"]
    operation = app.openapi()["paths"]["/v1/workers"]["get"]
    assert operation["operationId"] == "list_workers_v1_workers_get"
    assert operation["tags"] == ["workers"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["items"] == {"$ref": "#/components/schemas/WorkerOut"}
    fields = app.openapi()["components"]["schemas"]["WorkerOut"]["properties"]
    assert set(fields) == {
        "id",
        "hostname",
        "pid",
        "engine",
        "models",
        "started_at",
        "last_seen",
        "items_done",
    }


def test_most_recently_seen_first(client: TestClient, make_headers: Any, engine: Engine) -> None:
    now = utcnow()
    with session_factory(engine)() as session, session.begin():
        for n, age in enumerate((30, 1, 600)):
            session.add(
                Worker(
                    id=f"host-{n}:1",
                    hostname=f"host-{n}",
                    pid=1,
                    engine="vllm",
                    models=["m", "n"],
                    last_seen=now - timedelta(seconds=age),
                )
            )
    response = client.get("/v1/workers", headers=make_headers("alpha", "read"))
    assert response.status_code == 200, response.text
    workers = response.json()
    assert [w["id"] for w in workers] == ["host-1:1", "host-0:1", "host-2:1"]
    assert all(w["items_done"] == 0 and w["models"] == ["m", "n"] for w in workers)
    # Every scope grants read (the access matrix covers them); no key is refused.
    assert client.get("/v1/workers", headers=make_headers("beta", "train")).json() == workers
    assert client.get("/v1/workers").status_code == 401
