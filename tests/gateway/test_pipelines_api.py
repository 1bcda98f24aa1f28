"""Pipelines over the API: the whole recipe advanced stage by stage by the gateway.

The labelling stages run on the workers' code path (the chunk runner, with scripted
models; a run's model is loaded on demand as a worker serving ``run:*`` does), the
datasets freeze in the gateway's freezer, and a stand-in trainer claims each queued run
over the API, writes a model folder into the run's artifact folder and completes it, as
the trainer service does.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from charter.db.models import PipelineStage, TrainingRun
from charter.db.session import session_factory
from services.gateway.pipelines.advancer import Advancer
from tests.conftest import EXAMPLE_PROMPTS
from workers.engine_cache import RunModelCache
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

WORKER_MODELS = ["smollm2", "smollm2-135m", "m", "tiny-model", "run:*"]
RL = {"ppo": {"config": {}}, "dpo": {"config": {}}}


@pytest.fixture
def client(make_client: Any) -> TestClient:
    return make_client(worker_models=WORKER_MODELS)


@pytest.fixture
def batches(client: TestClient, api: Any, admin_headers: dict[str, str]) -> dict[str, str]:
    api.push_default(admin_headers)
    prompts = [json.loads(line)["prompt"] for line in EXAMPLE_PROMPTS.read_text().splitlines()]
    red = api.create_batch(admin_headers, [{"prompt": p} for p in prompts[:4]], name="red")
    held = api.create_batch(admin_headers, [{"prompt": p} for p in prompts[4:7]], name="held")
    return {"red": red["id"], "held": held["id"]}


def _body(batches: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "name": "recipe",
        "base_model": "smollm2",
        "constitution": "default",
        "prompts": batches["red"],
        "eval_prompts": batches["held"],
        "seed": 5,
        "sl_cai": {"params": {"rounds": 2}},
        "elo": {"bootstrap": 100},
        **RL,
        **extra,
    }


class Harness:
    """Workers, freezer and trainer in one loop around the gateway's advancer."""

    def __init__(self, app: FastAPI, client: TestClient, headers: dict[str, str], engine: Engine):
        self.app, self.client, self.headers = app, client, headers
        self.loaded: list[str] = []
        self.fail_runs: set[str] = set()
        settings = app.state.settings
        self.runner = ChunkRunner(
            session_factory(engine),
            {"smollm2": ScriptedEngine(model_name="smollm2")},
            settings,
            "host:1",
            run_models=RunModelCache(self._load, slots=1),
        )
        self.settings = settings

    def _load(self, name: str) -> ScriptedEngine:
        self.loaded.append(name)
        return ScriptedEngine(model_name=name)

    def get(self, pipeline_id: str) -> dict[str, Any]:
        return self.client.get(f"/v1/pipelines/{pipeline_id}", headers=self.headers).json()

    def step(self) -> None:
        self.app.state.pipelines.advance_all()
        self.app.state.policy_evals.advance_all()
        self._freeze()
        jobs = self.client.get("/v1/jobs?limit=1000", headers=self.headers).json()["items"]
        for job in jobs:
            if job["status"] in ("queued", "running"):
                for chunk in range(job["chunk_count"]):
                    self.runner.run_chunk(job["id"], chunk)
        self._train()

    def _freeze(self) -> None:
        freezer = self.app.state.freezer
        freezer.wake()
        deadline = time.monotonic() + 10
        while not freezer.idle() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _train(self) -> None:
        while True:
            claimed = self.client.post(
                "/v1/runs/claim", json={"owner": "trainer"}, headers=self.headers
            )
            if claimed.status_code == 204:
                return
            run = claimed.json()
            lease = {"lease_token": run["lease_token"]}
            if run["type"] in self.fail_runs:
                self.fail_runs.discard(run["type"])
                self._report(run, "fail", lease | {"error": "out of memory (made to fail)"})
                continue
            folder = self.settings.artifacts_dir.resolve() / "runs" / run["id"] / "model"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "config.json").write_text("{}")
            self._report(run, "complete", lease | {"artifact_uri": folder.as_uri()})

    def _report(self, run: dict[str, Any], what: str, body: dict[str, Any]) -> None:
        done = self.client.post(f"/v1/runs/{run['id']}/{what}", json=body, headers=self.headers)
        assert done.status_code == 200, done.text

    def until(self, pipeline_id: str, state: str, steps: int = 16) -> dict[str, Any]:
        for _ in range(steps):
            got = self.get(pipeline_id)
            if got["state"] == state:
                return got
            self.step()
        raise AssertionError(f"pipeline not {state}: {self.get(pipeline_id)}")


@pytest.fixture
def harness(client: TestClient, admin_headers: dict[str, str], engine: Engine) -> Harness:
    return Harness(client.app, client, admin_headers, engine)  # type: ignore[arg-type]


def _stages(pipeline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in pipeline["stages"]}


def test_the_whole_recipe_runs_stage_by_stage_from_each_stages_inputs(
    client: TestClient, admin_headers: dict[str, str], harness: Harness, batches: dict[str, str]
) -> None:
    submitted = client.post("/v1/pipelines", json=_body(batches), headers=admin_headers)
    assert submitted.status_code == 202, submitted.text
    pipeline = submitted.json()
    assert pipeline["state"] == "active"
    assert pipeline["spec"]["constitution"] == "default@1"  # pinned for every stage
    assert [s["name"] for s in pipeline["stages"]] == [
        "sl_cai", "sft_data", "sft", "rl_cai", "pref_data", "pm", "ppo", "dpo", "elo",
    ]  # fmt: skip
    assert {s["status"] for s in pipeline["stages"]} == {"pending"}

    done = harness.until(pipeline["id"], "completed")
    stages = _stages(done)
    assert all(s["status"] == "completed" and s["attempt"] == 1 for s in stages.values())
    body = {name: s["inputs"]["body"] for name, s in stages.items()}
    out = {name: s["output"] for name, s in stages.items()}
    sft_model = f"run:{out['sft']}"
    assert (body["sl_cai"]["type"], body["sl_cai"]["model"], body["sl_cai"]["batch_id"]) == (
        "sl_cai",
        "smollm2",
        batches["red"],
    )
    assert body["sl_cai"]["params"]["rounds"] == 2
    assert body["sft_data"]["filter"] == {"job_ids": [out["sl_cai"]]}
    assert body["sft"]["dataset"] == out["sft_data"] and body["sft"]["base_model"] == "smollm2"
    assert (body["rl_cai"]["type"], body["rl_cai"]["model"]) == ("rl_cai", sft_model)
    assert body["rl_cai"]["batch_id"] == batches["red"]  # rl_prompts defaults to prompts
    assert body["pref_data"]["filter"] == {"job_ids": [out["rl_cai"]]}
    assert (body["pm"]["dataset"], body["pm"]["base_model"]) == (out["pref_data"], "smollm2")
    assert (body["ppo"]["base_model"], body["ppo"]["reward_run"]) == (sft_model, out["pm"])
    assert body["dpo"]["base_model"] == sft_model and "reward_run" not in body["dpo"]
    assert stages["ppo"]["inputs"]["upstream"] == {"sft": 1, "pref_data": 1, "pm": 1}
    policies = {p["name"]: p["model"] for p in body["elo"]["policies"]}
    assert policies == {
        "base": "smollm2",
        "base-prompted": "smollm2",
        "sft": sft_model,
        "ppo": f"run:{out['ppo']}",
        "dpo": f"run:{out['dpo']}",
    }
    assert body["elo"]["batch_id"] == batches["held"]

    # Every object a stage names is the one it made, and was made from those inputs.
    job = client.get(f"/v1/jobs/{out['rl_cai']}", headers=admin_headers).json()
    assert (job["model"], job["constitution"], job["status"]) == (
        sft_model,
        "default@1",
        "completed",
    )
    ppo = client.get(f"/v1/runs/{out['ppo']}", headers=admin_headers).json()
    assert (ppo["config"]["base_model"], ppo["config"]["reward_run"]) == (sft_model, out["pm"])
    assert ppo["dataset"] == out["pref_data"]
    report = client.get(f"/v1/policy-evals/{out['elo']}/report", headers=admin_headers).json()
    assert report["complete"] and set(report["judges"]["harmlessness"]["head_to_head"][0]) >= {
        "a", "b"
    }  # fmt: skip
    assert report["generations"]["ppo"] == {"answered": 3, "prompts": 3}
    # run models were loaded on demand, one at a time (rl_cai's, then each policy's)
    assert harness.loaded[0] == sft_model and set(harness.loaded) == {
        sft_model, f"run:{out['ppo']}", f"run:{out['dpo']}"
    }  # fmt: skip
    listed = client.get("/v1/pipelines", headers=admin_headers).json()["items"]
    assert [(p["id"], p["state"]) for p in listed] == [(done["id"], "completed")]


def test_a_failed_stage_fails_the_pipeline_and_resume_continues_its_run(
    client: TestClient, admin_headers: dict[str, str], harness: Harness, batches: dict[str, str]
) -> None:
    harness.fail_runs.add("pm")
    pipeline = client.post("/v1/pipelines", json=_body(batches), headers=admin_headers).json()
    failed = harness.until(pipeline["id"], "failed")
    stages = _stages(failed)
    assert stages["pm"]["status"] == "failed" and "out of memory" in stages["pm"]["error"]
    assert (
        failed["error"].startswith("stage pm failed: run ") and "out of memory" in failed["error"]
    )
    assert stages["ppo"]["status"] == "pending"
    assert stages["dpo"]["status"] == "completed"  # it never needed the PM
    pm_run = stages["pm"]["run_id"]

    resumed = client.post(f"/v1/pipelines/{pipeline['id']}/resume", headers=admin_headers)
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["state"] == "active"
    again = _stages(resumed.json())["pm"]
    assert (again["status"], again["attempt"], again["run_id"]) == ("submitted", 1, pm_run)
    run = client.get(f"/v1/runs/{pm_run}", headers=admin_headers).json()
    assert run["status"] == "queued"  # the same run, back in the queue with its checkpoint
    done = harness.until(pipeline["id"], "completed")
    assert _stages(done)["pm"]["output"] == pm_run
    assert (
        client.post(f"/v1/pipelines/{pipeline['id']}/resume", headers=admin_headers).status_code
        == 409
    )


def test_a_stage_that_made_nothing_is_tried_again_as_a_new_attempt(
    client: TestClient, admin_headers: dict[str, str], harness: Harness, batches: dict[str, str]
) -> None:
    pipeline = client.post("/v1/pipelines", json=_body(batches), headers=admin_headers).json()
    client.app.state.pipelines.advance_all()  # type: ignore[attr-defined]
    sl_cai = _stages(harness.get(pipeline["id"]))["sl_cai"]
    cancel = client.post(f"/v1/jobs/{sl_cai['job_id']}/cancel", headers=admin_headers)
    assert cancel.status_code == 200
    failed = harness.until(pipeline["id"], "failed")
    assert failed["error"] == f"stage sl_cai failed: job {sl_cai['job_id']} was cancelled"
    client.post(f"/v1/pipelines/{pipeline['id']}/resume", headers=admin_headers)
    done = harness.until(pipeline["id"], "completed")
    first, second = _stages(done)["sl_cai"], None
    assert first["attempt"] == 2 and first["job_id"] != sl_cai["job_id"]
    attempts = client.get(f"/v1/pipelines/{pipeline['id']}/stages", headers=admin_headers).json()
    second = [(a["name"], a["attempt"], a["status"]) for a in attempts if a["name"] == "sl_cai"]
    assert second == [("sl_cai", 1, "failed"), ("sl_cai", 2, "completed")]


def test_rerun_from_a_stage_supersedes_it_and_its_dependants_only(
    client: TestClient, admin_headers: dict[str, str], harness: Harness, batches: dict[str, str]
) -> None:
    pipeline = client.post("/v1/pipelines", json=_body(batches), headers=admin_headers).json()
    first = _stages(harness.until(pipeline["id"], "completed"))
    rerun = client.post(
        f"/v1/pipelines/{pipeline['id']}/rerun", json={"stage": "pm"}, headers=admin_headers
    )
    assert rerun.status_code == 200, rerun.text
    marked = _stages(rerun.json())
    assert {n: s["status"] for n, s in marked.items() if s["status"] != "completed"} == {
        "pm": "superseded",
        "ppo": "superseded",
        "elo": "superseded",
    }
    second = _stages(harness.until(pipeline["id"], "completed"))
    for name in ("pm", "ppo", "elo"):
        assert second[name]["attempt"] == 2 and second[name]["output"] != first[name]["output"]
    for name in ("sl_cai", "sft", "rl_cai", "pref_data", "dpo"):
        assert second[name] == first[name]
    assert second["ppo"]["inputs"]["body"]["reward_run"] == second["pm"]["output"]
    assert second["ppo"]["inputs"]["upstream"] == {"sft": 1, "pref_data": 1, "pm": 2}
    bad = client.post(
        f"/v1/pipelines/{pipeline['id']}/rerun", json={"stage": "rloo"}, headers=admin_headers
    )
    assert bad.status_code == 422 and bad.json()["field"] == "body.stage"


def test_cancel_stops_the_stage_in_flight(
    client: TestClient, admin_headers: dict[str, str], harness: Harness, batches: dict[str, str]
) -> None:
    pipeline = client.post("/v1/pipelines", json=_body(batches), headers=admin_headers).json()
    client.app.state.pipelines.advance_all()  # type: ignore[attr-defined]
    cancelled = client.post(f"/v1/pipelines/{pipeline['id']}/cancel", headers=admin_headers)
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    sl_cai = _stages(cancelled.json())["sl_cai"]
    assert sl_cai["status"] == "cancelled"
    job = client.get(f"/v1/jobs/{sl_cai['job_id']}", headers=admin_headers).json()
    assert job["status"] == "cancelled"
    harness.step()
    assert harness.get(pipeline["id"])["state"] == "cancelled"  # never advanced again
    again = client.post(f"/v1/pipelines/{pipeline['id']}/cancel", headers=admin_headers)
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"prompts": "0" * 32}, 404, "body.prompts"),
        ({"eval_prompts": "0" * 32}, 404, "body.eval_prompts"),
        ({"constitution": "nope"}, 404, "body.constitution"),
        ({"base_model": "no-such-model"}, 422, "body.sl_cai.model"),
        ({"sft": {"config": {"learning_rate": -1}}}, 422, "body.sft.config.learning_rate"),
        ({"sl_cai": {"params": {"rounds": 9}}}, 422, "body.sl_cai.params.rounds"),
        ({"rl_cai": {"params": {"feedback_template": "nope"}}}, 404, "body.rl_cai.params.feedback_template"),
        ({"sft_data": {"mix": {"source": "helpful", "ratio": 0.5}}}, 422, "body.sft_data.mix.source"),
        ({"elo": {"judges": [{"name": "h", "constitution": "nope"}]}}, 404, "body.elo.judges.0.constitution"),
        ({"dpo": {"config": {"beta": "x"}}}, 422, "body.dpo.config.beta"),
    ],
)  # fmt: skip
def test_bad_specs_are_refused_naming_the_field(
    client: TestClient,
    admin_headers: dict[str, str],
    batches: dict[str, str],
    change: dict[str, Any],
    status: int,
    field: str,
) -> None:
    refused = client.post("/v1/pipelines", json=_body(batches) | change, headers=admin_headers)
    assert refused.status_code == status, refused.text
    assert refused.json()["field"] == field, refused.text


def test_a_pipeline_needs_workers_that_serve_run_models_and_both_scopes(
    make_client: Any, api: Any, make_headers: Any, admin_headers: dict[str, str]
) -> None:
    client = make_client()  # the default worker list has no run:*
    api.client = client
    api.push_default(admin_headers)
    batch = api.create_batch(admin_headers, [{"prompt": "How do I pick a lock?"}], name="red")
    body = _body({"red": batch["id"], "held": batch["id"]})
    refused = client.post("/v1/pipelines", json=body, headers=admin_headers)
    assert refused.status_code == 422 and refused.json()["field"] == "body.rl_cai"
    assert "run:*" in refused.json()["detail"]
    trainer = make_headers("alpha", "train")
    forbidden = client.post("/v1/pipelines", json=body, headers=trainer)
    assert forbidden.status_code == 403 and "submit" in forbidden.json()["detail"]


def test_two_advancers_never_submit_a_stage_twice(
    postgres_only: None,
    client: TestClient,
    admin_headers: dict[str, str],
    engine: Engine,
    batches: dict[str, str],
) -> None:
    app = client.app
    pipelines = [
        client.post("/v1/pipelines", json=_body(batches), headers=admin_headers).json()["id"]
        for _ in range(3)
    ]
    advancers = [
        Advancer(app.state.sessions, app.state.settings, app.state.outbox, app.state.freezer)  # type: ignore[attr-defined]
        for _ in range(4)
    ]
    start = threading.Barrier(len(advancers))

    def race(advancer: Advancer) -> None:
        start.wait()
        for _ in range(5):
            advancer.advance_all()

    threads = [threading.Thread(target=race, args=(a,)) for a in advancers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with session_factory(engine)() as s:
        rows = s.execute(
            select(PipelineStage.pipeline_id, PipelineStage.name, func.count()).group_by(
                PipelineStage.pipeline_id, PipelineStage.name
            )
        ).all()
        assert sorted((p, n, c) for p, n, c in rows) == sorted((p, "sl_cai", 1) for p in pipelines)
        assert s.scalar(select(func.count()).select_from(TrainingRun)) == 0


def test_a_stage_that_cannot_be_submitted_fails_the_pipeline_with_the_reason(
    client: TestClient, admin_headers: dict[str, str], harness: Harness, batches: dict[str, str]
) -> None:
    # No RL-CAI label is certain: the preference dataset's filter selects nothing.
    body = _body(batches, pref_data={"min_confidence": 1.0})
    pipeline = client.post("/v1/pipelines", json=body, headers=admin_headers).json()
    failed = harness.until(pipeline["id"], "failed")
    assert failed["error"] == "stage pref_data cannot be submitted: the filter matches no labels"
    stage = _stages(failed)["pref_data"]
    assert (stage["status"], stage["attempt"], stage["dataset_version_id"]) == ("failed", 1, None)
    assert stage["inputs"]["body"]["filter"]["min_confidence"] == 1.0
    assert _stages(failed)["pm"]["status"] == "pending"
    listed = client.get("/v1/datasets", headers=admin_headers).json()["items"]
    assert not [d for d in listed if d["kind"] == "preference"]  # nothing half-made
