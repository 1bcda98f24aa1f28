"""Training runs over the API: create, claim under a lease, report, finish, resume."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from charter.db.models import Dataset, DatasetVersion, TrainingRun, utcnow
from charter.db.session import session_factory


@pytest.fixture
def datasets(engine, issue):
    """A preference and an SFT dataset version in project alpha."""
    key = issue("alpha", ("admin",))
    with session_factory(engine)() as s, s.begin():
        for name, kind in (("prefs", "preference"), ("revisions", "sft")):
            d = Dataset(project_id=key.project_id, name=name, kind=kind)
            s.add(d)
            s.flush()
            s.add(DatasetVersion(dataset_id=d.id, version=1, filter={}, row_count=0))
    return key.headers


def create(client, headers, **body):
    body.setdefault("type", "pm")
    body.setdefault("dataset", "prefs")
    body.setdefault("base_model", "smollm2")
    return client.post("/v1/runs", json=body, headers=headers)


def test_create_claim_report_complete(client, datasets):
    run = create(client, datasets, config={"epochs": 1}).json()
    assert run["status"] == "queued" and run["dataset"] == "prefs@1"
    assert run["config"]["epochs"] == 1 and run["config"]["base_model"] == "smollm2"
    claimed = client.post("/v1/runs/claim", json={"owner": "t1"}, headers=datasets)
    assert claimed.status_code == 200 and claimed.json()["id"] == run["id"]
    assert claimed.json()["status"] == "running" and claimed.json()["lease_owner"] == "t1"
    assert client.post("/v1/runs/claim", json={"owner": "t2"}, headers=datasets).status_code == 204
    points = [
        {"step": i, "metrics": {"loss": 1.0 / (i + 1), "accuracy": 0.5 + i / 10}} for i in range(3)
    ]
    assert (
        client.post(
            f"/v1/runs/{run['id']}/metrics",
            json={"owner": "t1", "points": points},
            headers=datasets,
        ).status_code
        == 204
    )
    assert (
        client.post(
            f"/v1/runs/{run['id']}/heartbeat", json={"owner": "t1"}, headers=datasets
        ).status_code
        == 200
    )
    done = client.post(
        f"/v1/runs/{run['id']}/complete",
        json={"owner": "t1", "artifact_uri": "file:///a"},
        headers=datasets,
    )
    assert done.json()["status"] == "completed" and done.json()["artifact_uri"] == "file:///a"
    detail = client.get(f"/v1/runs/{run['id']}", headers=datasets).json()
    assert detail["last_metrics"] == {"loss": pytest.approx(1 / 3), "accuracy": pytest.approx(0.7)}
    metrics = client.get(f"/v1/runs/{run['id']}/metrics?limit=2", headers=datasets).json()
    assert [m["step"] for m in metrics["items"]] == [0, 1] and metrics["next_cursor"]
    rest = client.get(
        f"/v1/runs/{run['id']}/metrics?cursor={metrics['next_cursor']}", headers=datasets
    ).json()
    assert [m["step"] for m in rest["items"]] == [2]


def test_lease_fencing_and_takeover(client, datasets, engine):
    run = create(client, datasets).json()
    client.post("/v1/runs/claim", json={"owner": "old"}, headers=datasets)
    with session_factory(engine)() as s, s.begin():
        s.execute(update(TrainingRun).values(lease_expires_at=utcnow().replace(year=2000)))
    taken = client.post("/v1/runs/claim", json={"owner": "new"}, headers=datasets)
    assert taken.json()["id"] == run["id"] and taken.json()["lease_owner"] == "new"
    stale = client.post(
        f"/v1/runs/{run['id']}/metrics",
        json={"owner": "old", "points": [{"step": 0, "metrics": {"loss": 1}}]},
        headers=datasets,
    )
    assert stale.status_code == 409 and stale.json()["field"] == "owner"
    assert (
        client.post(
            f"/v1/runs/{run['id']}/complete",
            json={"owner": "old", "artifact_uri": "x"},
            headers=datasets,
        ).status_code
        == 409
    )


def test_fail_then_resume_keeps_checkpoint(client, datasets):
    run = create(client, datasets).json()
    client.post("/v1/runs/claim", json={"owner": "t"}, headers=datasets)
    client.post(
        f"/v1/runs/{run['id']}/checkpoint",
        json={"owner": "t", "checkpoint": "/ckpt/10"},
        headers=datasets,
    )
    failed = client.post(
        f"/v1/runs/{run['id']}/fail", json={"owner": "t", "error": "CUDA OOM"}, headers=datasets
    ).json()
    assert failed["status"] == "failed" and failed["error"] == "CUDA OOM"
    resumed = client.post(f"/v1/runs/{run['id']}/resume", headers=datasets).json()
    assert (
        resumed["status"] == "queued"
        and resumed["checkpoint"] == "/ckpt/10"
        and resumed["error"] is None
    )
    assert client.post(f"/v1/runs/{run['id']}/resume", headers=datasets).status_code == 409


def test_claim_filters_by_type_and_cancel(client, datasets):
    sft = create(client, datasets, type="sft", dataset="revisions").json()
    create(client, datasets, type="pm")
    assert (
        client.post(
            "/v1/runs/claim", json={"owner": "t", "types": ["sft"]}, headers=datasets
        ).json()["id"]
        == sft["id"]
    )
    cancelled = client.post(f"/v1/runs/{sft['id']}/cancel", headers=datasets).json()
    assert cancelled["status"] == "cancelled"
    assert client.post(f"/v1/runs/{sft['id']}/cancel", headers=datasets).status_code == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "sft", "dataset": "prefs"}, "dataset"),
        ({"type": "pm", "dataset": "missing"}, "dataset"),
        ({"type": "ppo", "dataset": "revisions"}, "reward_run"),
        ({"type": "ppo", "dataset": "revisions", "reward_run": "0" * 32}, "reward_run"),
        ({"type": "pm", "reward_run": "0" * 32}, "type"),
        ({"type": "pm", "base_model": "run:" + "0" * 32}, "base_model"),
        ({"type": "pm", "base_model": "bad model!"}, "body.base_model"),
        ({"type": "rl"}, "body.type"),
    ],
)
def test_bad_runs_answer_4xx_naming_the_field(client, datasets, body, field):
    response = create(client, datasets, **body)
    assert response.status_code in (404, 422), response.text
    assert response.json()["field"] == field


def test_ppo_needs_a_completed_pm_run(client, datasets):
    pm = create(client, datasets).json()
    early = create(client, datasets, type="ppo", dataset="revisions", reward_run=pm["id"])
    assert early.status_code == 422 and "completed pm run" in early.json()["detail"]
    client.post("/v1/runs/claim", json={"owner": "t"}, headers=datasets)
    client.post(
        f"/v1/runs/{pm['id']}/complete",
        json={"owner": "t", "artifact_uri": "file:///pm"},
        headers=datasets,
    )
    ppo = create(
        client,
        datasets,
        type="ppo",
        dataset="revisions",
        reward_run=pm["id"],
        base_model=f"run:{pm['id']}",
    )
    assert ppo.status_code == 201 and ppo.json()["config"]["reference_model"] == f"run:{pm['id']}"


def test_scopes_and_isolation(client, datasets, make_headers):
    run = create(client, datasets).json()
    reader = make_headers("alpha", "read")
    assert create(client, reader).status_code == 403
    assert client.post("/v1/runs/claim", json={"owner": "t"}, headers=reader).status_code == 403
    assert client.get(f"/v1/runs/{run['id']}", headers=reader).status_code == 200
    other = make_headers("beta", "admin")
    assert client.get(f"/v1/runs/{run['id']}", headers=other).status_code == 404
    assert client.post("/v1/runs/claim", json={"owner": "t"}, headers=other).status_code == 204
    assert client.get("/v1/runs", headers=other).json()["items"] == []
