"""Training runs over the API: create, claim under a lease, report, finish, resume."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import func, select, update

from charter.db.models import Dataset, DatasetVersion, IdempotencyRecord, TrainingRun, utcnow
from charter.db.session import session_factory


@pytest.fixture
def datasets(engine, issue):
    """A preference, an SFT and a classifier dataset version in project alpha."""
    key = issue("alpha", ("admin",))
    with session_factory(engine)() as s, s.begin():
        for name, kind in (("prefs", "preference"), ("revisions", "sft"), ("guard", "classifier")):
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


def claim(client, headers, owner="t", **body):
    """Claim a run; the response's lease_token is the secret every report presents."""
    response = client.post("/v1/runs/claim", json={"owner": owner, **body}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def run_dir(settings, run_id):
    """The folder of the artifact store the gateway lets a run report into."""
    return settings.artifacts_dir.resolve() / "runs" / run_id


def test_create_claim_report_complete(client, datasets, settings):
    run = create(client, datasets, config={"num_train_epochs": 2}).json()
    assert run["status"] == "queued" and run["dataset"] == "prefs@1"
    assert run["config"]["num_train_epochs"] == 2 and run["config"]["base_model"] == "smollm2"
    claimed = client.post("/v1/runs/claim", json={"owner": "t1"}, headers=datasets)
    assert claimed.status_code == 200 and claimed.json()["id"] == run["id"]
    assert claimed.json()["status"] == "running" and claimed.json()["lease_owner"] == "t1"
    token = claimed.json()["lease_token"]
    assert isinstance(token, str) and len(token) >= 43  # token_urlsafe(32)
    assert client.post("/v1/runs/claim", json={"owner": "t2"}, headers=datasets).status_code == 204
    points = [
        {"step": i, "metrics": {"loss": 1.0 / (i + 1), "accuracy": 0.5 + i / 10}} for i in range(3)
    ]
    assert (
        client.post(
            f"/v1/runs/{run['id']}/metrics",
            json={"lease_token": token, "points": points},
            headers=datasets,
        ).status_code
        == 204
    )
    beat = client.post(
        f"/v1/runs/{run['id']}/heartbeat", json={"lease_token": token}, headers=datasets
    )
    assert beat.status_code == 200 and "lease_token" not in beat.json()
    uri = (run_dir(settings, run["id"]) / "model").as_uri()
    done = client.post(
        f"/v1/runs/{run['id']}/complete",
        json={"lease_token": token, "artifact_uri": uri},
        headers=datasets,
    )
    assert done.json()["status"] == "completed" and done.json()["artifact_uri"] == uri
    detail = client.get(f"/v1/runs/{run['id']}", headers=datasets).json()
    assert detail["last_metrics"] == {"loss": pytest.approx(1 / 3), "accuracy": pytest.approx(0.7)}
    metrics = client.get(f"/v1/runs/{run['id']}/metrics?limit=2", headers=datasets).json()
    assert [m["step"] for m in metrics["items"]] == [0, 1] and metrics["next_cursor"]
    rest = client.get(
        f"/v1/runs/{run['id']}/metrics?cursor={metrics['next_cursor']}", headers=datasets
    ).json()
    assert [m["step"] for m in rest["items"]] == [2]


def test_lease_fencing_and_takeover(client, datasets, engine, settings):
    run = create(client, datasets).json()
    old = claim(client, datasets, owner="old")["lease_token"]
    with session_factory(engine)() as s, s.begin():
        s.execute(update(TrainingRun).values(lease_expires_at=utcnow().replace(year=2000)))
    taken = claim(client, datasets, owner="new")
    assert taken["id"] == run["id"] and taken["lease_owner"] == "new"
    assert taken["lease_token"] != old
    uri = (run_dir(settings, run["id"]) / "model").as_uri()
    # The previous lease's token stops working on every lease-holder call, even under
    # the owner name of the new lease.
    for path, body in (
        ("metrics", {"points": [{"step": 0, "metrics": {"loss": 1}}]}),
        ("heartbeat", {}),
        ("checkpoint", {"checkpoint": str(run_dir(settings, run["id"]) / "checkpoint-1")}),
        ("complete", {"artifact_uri": uri}),
        ("fail", {"error": "x"}),
    ):
        stale = client.post(
            f"/v1/runs/{run['id']}/{path}", json={"lease_token": old, **body}, headers=datasets
        )
        assert stale.status_code == 409, (path, stale.text)
        assert stale.json()["field"] == "lease_token"
    with session_factory(engine)() as s:
        row = s.get(TrainingRun, run["id"])
        assert row.status == "running" and row.checkpoint is None and row.lease_owner == "new"
    done = client.post(
        f"/v1/runs/{run['id']}/complete",
        json={"lease_token": taken["lease_token"], "artifact_uri": uri},
        headers=datasets,
    )
    assert done.status_code == 200 and done.json()["status"] == "completed"


def test_fail_then_resume_keeps_checkpoint(client, datasets, settings):
    run = create(client, datasets).json()
    token = claim(client, datasets)["lease_token"]
    checkpoint = str(run_dir(settings, run["id"]) / "model" / "checkpoint-10")
    recorded = client.post(
        f"/v1/runs/{run['id']}/checkpoint",
        json={"lease_token": token, "checkpoint": checkpoint},
        headers=datasets,
    )
    assert recorded.status_code == 200 and recorded.json()["checkpoint"] == checkpoint
    failed = client.post(
        f"/v1/runs/{run['id']}/fail",
        json={"lease_token": token, "error": "CUDA OOM"},
        headers=datasets,
    ).json()
    assert failed["status"] == "failed" and failed["error"] == "CUDA OOM"
    resumed = client.post(f"/v1/runs/{run['id']}/resume", headers=datasets).json()
    assert (
        resumed["status"] == "queued"
        and resumed["checkpoint"] == checkpoint
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
        ({"type": "pm", "reward_run": "0" * 32}, "reward_run"),  # a field pm runs lack
        ({"type": "grpo", "dataset": "revisions"}, "reward_run"),
        ({"type": "pm", "base_model": "run:" + "0" * 32}, "base_model"),
        ({"type": "pm", "base_model": "bad model!"}, "body.base_model"),
        ({"type": "rl"}, "body.type"),
    ],
)
def test_bad_runs_answer_4xx_naming_the_field(client, datasets, body, field):
    response = create(client, datasets, **body)
    assert response.status_code in (404, 422), response.text
    assert response.json()["field"] == field


def test_ppo_needs_a_completed_pm_run(client, datasets, settings):
    pm = create(client, datasets).json()
    early = create(client, datasets, type="ppo", dataset="revisions", reward_run=pm["id"])
    assert early.status_code == 422 and "completed pm run" in early.json()["detail"]
    token = claim(client, datasets)["lease_token"]
    done = client.post(
        f"/v1/runs/{pm['id']}/complete",
        json={"lease_token": token, "artifact_uri": (run_dir(settings, pm["id"])).as_uri()},
        headers=datasets,
    )
    assert done.status_code == 200, done.text
    ppo = create(
        client,
        datasets,
        type="ppo",
        dataset="revisions",
        reward_run=pm["id"],
        base_model=f"run:{pm['id']}",
    )
    assert ppo.status_code == 201 and ppo.json()["config"]["reference_model"] == f"run:{pm['id']}"


def test_a_classifier_trains_from_a_writer_and_is_no_base_for_one(client, datasets, settings):
    guard = create(client, datasets, type="classifier", dataset="guard")
    assert guard.status_code == 201, guard.text
    assert guard.json()["config"]["target"] == "input"  # normalised, defaults filled in
    wrong = create(client, datasets, type="classifier", dataset="revisions")
    assert wrong.status_code == 422 and wrong.json()["field"] == "dataset"
    token = claim(client, datasets)["lease_token"]
    uri = run_dir(settings, guard.json()["id"]).as_uri()
    complete = client.post(
        f"/v1/runs/{guard.json()['id']}/complete",
        json={"lease_token": token, "artifact_uri": uri},
        headers=datasets,
    )
    assert complete.status_code == 200, complete.text
    from_guard = create(
        client, datasets, type="sft", dataset="revisions", base_model=f"run:{guard.json()['id']}"
    )
    assert from_guard.status_code == 422 and from_guard.json()["field"] == "base_model"
    assert "is a classifier" in from_guard.json()["detail"]


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


# --------------------------------------------------------------------------- lease tokens


def test_another_train_key_cannot_report_into_a_run_it_did_not_claim(
    client, datasets, make_headers, engine, settings
):
    """The owner name is public (lease_owner), so it fences nothing: only the token does."""
    victim = create(client, datasets).json()
    other_run = create(client, datasets).json()
    trainer = make_headers("alpha", "train")
    intruder = make_headers("alpha", "train")
    held = claim(client, trainer, owner="t1")
    assert held["id"] == victim["id"]
    seen = client.get(f"/v1/runs/{victim['id']}", headers=intruder).json()
    assert seen["lease_owner"] == "t1"
    own = claim(client, intruder, owner="t1")  # a lease of its own, on another run
    assert own["id"] == other_run["id"]
    uri = (run_dir(settings, victim["id"]) / "model").as_uri()
    for body in (
        {"owner": "t1"},
        {"owner": "t1", "lease_token": ""},
        {"owner": "t1", "lease_token": "forged"},
        {"owner": "t1", "lease_token": own["lease_token"]},
        {"owner": "t1", "lease_token": held["lease_token"][:-1]},
    ):
        forged = client.post(
            f"/v1/runs/{victim['id']}/complete",
            json={**body, "artifact_uri": uri},
            headers=intruder,
        )
        assert forged.status_code == 409, (body, forged.text)
        assert forged.json()["field"] == "lease_token"
        for path, extra in (
            ("fail", {"error": "x"}),
            ("heartbeat", {}),
            ("metrics", {"points": [{"step": 0, "metrics": {"loss": 9.0}}]}),
        ):
            response = client.post(
                f"/v1/runs/{victim['id']}/{path}", json={**body, **extra}, headers=intruder
            )
            assert response.status_code == 409 and response.json()["field"] == "lease_token"
    with session_factory(engine)() as s:
        row = s.get(TrainingRun, victim["id"])
        assert row.status == "running" and row.artifact_uri is None and row.error is None
    assert client.get(f"/v1/runs/{victim['id']}/metrics", headers=trainer).json()["items"] == []
    # The lease holder is unaffected, whatever owner name it sends or omits.
    done = client.post(
        f"/v1/runs/{victim['id']}/complete",
        json={"lease_token": held["lease_token"], "artifact_uri": uri},
        headers=trainer,
    )
    assert done.status_code == 200 and done.json()["status"] == "completed"


def test_only_the_claim_shows_the_token_and_only_its_hash_is_stored(
    client, datasets, make_headers, engine
):
    run = create(client, datasets).json()
    token = claim(client, datasets)["lease_token"]
    with session_factory(engine)() as s:
        row = s.get(TrainingRun, run["id"])
        assert row.lease_token_hash == hashlib.sha256(token.encode()).hexdigest()
        stored = " ".join(str(getattr(row, c.key)) for c in TrainingRun.__table__.columns)
        assert token not in stored
    client.post(
        f"/v1/runs/{run['id']}/metrics",
        json={"lease_token": token, "points": [{"step": 1, "metrics": {"loss": 1.0}}]},
        headers=datasets,
    )
    reader = make_headers("alpha", "read")
    for headers in (reader, datasets):
        for path in ("/v1/runs", f"/v1/runs/{run['id']}", f"/v1/runs/{run['id']}/metrics"):
            response = client.get(path, headers=headers)
            assert response.status_code == 200
            assert token not in response.text and "lease_token" not in response.text
            assert row.lease_token_hash not in response.text
    beat = client.post(
        f"/v1/runs/{run['id']}/heartbeat", json={"lease_token": token}, headers=datasets
    )
    assert token not in beat.text and "lease_token" not in beat.text


@pytest.mark.parametrize("how", ["complete", "fail", "cancel"])
def test_finishing_a_run_clears_its_lease_token(client, datasets, engine, settings, how):
    run = create(client, datasets).json()
    token = claim(client, datasets)["lease_token"]
    if how == "cancel":
        response = client.post(f"/v1/runs/{run['id']}/cancel", headers=datasets)
    else:
        body = (
            {"error": "x"}
            if how == "fail"
            else {"artifact_uri": run_dir(settings, run["id"]).as_uri()}
        )
        response = client.post(
            f"/v1/runs/{run['id']}/{how}", json={"lease_token": token, **body}, headers=datasets
        )
    assert response.status_code == 200, response.text
    with session_factory(engine)() as s:
        row = s.get(TrainingRun, run["id"])
        assert row.lease_token_hash is None and row.lease_owner is None
    again = client.post(
        f"/v1/runs/{run['id']}/heartbeat", json={"lease_token": token}, headers=datasets
    )
    assert again.status_code == 409 and again.json()["field"] == "lease_token"
    if how != "complete":  # resumed and claimed again: a new token, the old one still refused
        client.post(f"/v1/runs/{run['id']}/resume", headers=datasets)
        fresh = claim(client, datasets)["lease_token"]
        assert fresh != token
        stale = client.post(
            f"/v1/runs/{run['id']}/fail",
            json={"lease_token": token, "error": "x"},
            headers=datasets,
        )
        assert stale.status_code == 409


def test_the_openapi_schema_documents_the_lease_token_on_the_claim_only(app):
    schema = app.openapi()
    components = schema["components"]["schemas"]
    ok = schema["paths"]["/v1/runs/claim"]["post"]["responses"]["200"]
    ref = ok["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert "lease_token" in components[ref]["properties"]
    assert "lease_token" in components[ref]["required"]
    assert "lease_token" not in components["RunOut"]["properties"]
    for path in ("heartbeat", "metrics", "checkpoint", "complete", "fail"):
        body = schema["paths"][f"/v1/runs/{{run_id}}/{path}"]["post"]["requestBody"]
        body_ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        assert "lease_token" in components[body_ref]["properties"], path


# --------------------------------------------------------------------------- provenance


@pytest.mark.parametrize(
    ("override", "value"),
    [
        ("dataset", "revisions@1"),
        ("base_model", "/etc"),
        ("reference_model", "run:" + "0" * 32),
        ("reward_run", "0" * 32),
        ("dataset_version_id", "0" * 32),
        ("type", "sft"),
    ],
)
def test_config_cannot_override_a_validated_field(client, datasets, engine, override, value):
    response = create(client, datasets, config={"max_steps": 2, override: value})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == f"config.{override}"
    with session_factory(engine)() as s:
        assert s.scalar(select(func.count()).select_from(TrainingRun)) == 0


def test_the_run_reports_the_dataset_version_it_was_validated_on(client, datasets, engine):
    run = create(client, datasets).json()
    # Even a row whose stored config names another dataset (written before config was
    # checked) is reported, and so trained, on its validated dataset version.
    with session_factory(engine)() as s, s.begin():
        row = s.get(TrainingRun, run["id"])
        row.config = {**row.config, "dataset": "revisions@1"}
    assert client.get(f"/v1/runs/{run['id']}", headers=datasets).json()["dataset"] == "prefs@1"
    assert client.get("/v1/runs", headers=datasets).json()["items"][0]["dataset"] == "prefs@1"
    assert claim(client, datasets)["dataset"] == "prefs@1"


# --------------------------------------------------------------------------- the artifact store


def _outside(settings, run_id, other_id):
    store = settings.artifacts_dir.resolve()
    mine = store / "runs" / run_id
    return [
        "file:///etc",
        "file:///etc/passwd",
        f"file://{store}",
        f"file://{store}/runs",
        f"file://{store}/runs/{other_id}/model",
        f"file://{store}/runs/{run_id}x/model",
        f"file://{mine}/../{other_id}/model",
        f"file://{mine}/model/../../{other_id}",
        f"file://{mine}/%2e%2e/{other_id}/model",
        f"file://{mine}/%2E%2E/{other_id}/model",
        f"file://{mine}%2f..%2f{other_id}",
        f"file://{mine}/%252e%252e/{other_id}",
        f"file://{mine}/model%00",
        f"file://evil.example{mine}/model",
        f"http://example.com{mine}/model",
        f"s3://bucket{mine}/model",
        "model",
        f"runs/{run_id}/model",
        f"./runs/{run_id}/model",
    ]


def test_artifact_uri_must_lie_in_the_runs_folder_of_the_store(client, datasets, engine, settings):
    run = create(client, datasets).json()
    other = create(client, datasets, type="sft", dataset="revisions").json()
    token = claim(client, datasets, types=["pm"])["lease_token"]
    mine = run_dir(settings, run["id"])
    for uri in [*_outside(settings, run["id"], other["id"]), f"{mine}/model"]:
        response = client.post(
            f"/v1/runs/{run['id']}/complete",
            json={"lease_token": token, "artifact_uri": uri},
            headers=datasets,
        )
        assert response.status_code == 422, (uri, response.text)
        assert response.json()["field"] == "artifact_uri"
        assert str(mine) in response.json()["detail"]  # says where artifacts must live
    with session_factory(engine)() as s:
        row = s.get(TrainingRun, run["id"])
        assert row.status == "running" and row.artifact_uri is None
    done = client.post(
        f"/v1/runs/{run['id']}/complete",
        json={"lease_token": token, "artifact_uri": f"file://{mine}/./model/"},
        headers=datasets,
    )
    assert done.status_code == 200, done.text
    assert done.json()["artifact_uri"] == (mine / "model").as_uri()  # stored normalised


def test_checkpoint_must_lie_in_the_runs_folder_of_the_store(client, datasets, engine, settings):
    run = create(client, datasets).json()
    other = create(client, datasets, type="sft", dataset="revisions").json()
    token = claim(client, datasets, types=["pm"])["lease_token"]
    store = settings.artifacts_dir.resolve()
    mine = run_dir(settings, run["id"])
    plain = [
        "/etc",
        "/ckpt/10",
        f"{store}/runs/{other['id']}/model/checkpoint-2",
        f"{mine}/../{other['id']}/model/checkpoint-2",
        f"{mine}/%2e%2e/{other['id']}",
        f"//{mine}/model/checkpoint-2",
    ]
    for value in [*_outside(settings, run["id"], other["id"]), *plain]:
        response = client.post(
            f"/v1/runs/{run['id']}/checkpoint",
            json={"lease_token": token, "checkpoint": value},
            headers=datasets,
        )
        assert response.status_code == 422, (value, response.text)
        assert response.json()["field"] == "checkpoint"
        assert str(mine) in response.json()["detail"]
    with session_factory(engine)() as s:
        assert s.get(TrainingRun, run["id"]).checkpoint is None
    for value in (f"{mine}/model/checkpoint-2", (mine / "model" / "checkpoint-4").as_uri()):
        response = client.post(
            f"/v1/runs/{run['id']}/checkpoint",
            json={"lease_token": token, "checkpoint": value},
            headers=datasets,
        )
        assert response.status_code == 200, response.text
    # stored as the plain path the trainer resumes from
    assert response.json()["checkpoint"] == str(mine / "model" / "checkpoint-4")


def test_a_retried_claim_never_replays_the_token(client, datasets, engine):
    create(client, datasets)
    headers = {**datasets, "Idempotency-Key": "claim-1"}
    first = client.post("/v1/runs/claim", json={"owner": "t"}, headers=headers)
    assert first.status_code == 200
    token = first.json()["lease_token"]
    retry = client.post("/v1/runs/claim", json={"owner": "t"}, headers=headers)
    assert retry.status_code == 409 and token not in retry.text
    with session_factory(engine)() as s:
        stored = s.scalars(select(IdempotencyRecord.response_body)).all()
        assert len(stored) == 1 and token not in stored[0]
