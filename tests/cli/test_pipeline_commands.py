"""``charter pipeline`` against a live gateway: the example spec run to its Elo report,
status and attempts, re-run and resume, cancel, and ``--watch`` through a failure.

The gateway's pipeline advancer is driven by the test (``Harness.step`` of the gateway's
pipeline tests: advance, freeze, label the jobs with scripted models, train the runs
with a stand-in trainer), by hand or from a thread while a ``--watch`` polls.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import Engine

from charter.embedded import GatewayThread
from charter.settings import get_settings
from services.gateway.pipelines.schemas import PipelineCreate
from tests.cli.test_commands import ROOT, as_json, run
from tests.conftest import EXAMPLE_PROMPTS
from tests.gateway.test_pipelines_api import WORKER_MODELS, Harness

SPEC = ROOT / "examples" / "pipeline.yaml"
STAGES = ["sl_cai", "sft_data", "sft", "rl_cai", "pref_data", "pm", "ppo", "dpo", "elo"]


def test_the_example_spec_is_a_valid_pipeline() -> None:
    body = yaml.safe_load(SPEC.read_text()) | {"prompts": "a" * 32, "eval_prompts": "b" * 32}
    pipeline = PipelineCreate.model_validate(body)
    assert (pipeline.base_model, pipeline.constitution) == ("smollm2", "default")
    assert pipeline.rl() == ["ppo", "dpo"]
    assert pipeline.sl_cai.params.rounds == 1 and pipeline.elo.bootstrap == 200
    assert pipeline.sft.config.max_steps <= 16 and pipeline.ppo is not None
    assert pipeline.ppo.config.total_steps <= 8


@pytest.fixture
def harness(monkeypatch: Any, make_settings: Any, engine: Engine, issue: Any) -> Iterator[Harness]:
    """A live gateway whose workers serve run models (CHARTER_API_URL and an admin key
    set for the CLI), and the harness that advances its pipelines."""
    settings = make_settings(worker_models=WORKER_MODELS)
    monkeypatch.setenv("CHARTER_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("CHARTER_SECRET_KEY", settings.secret_key)
    with GatewayThread(settings) as gateway, httpx.Client(base_url=gateway.url) as http:
        key = issue("cli", ("admin",)).key
        monkeypatch.setenv("CHARTER_API_URL", gateway.url)
        monkeypatch.setenv("CHARTER_API_KEY", key)
        get_settings.cache_clear()
        yield Harness(gateway.app, http, {"X-API-Key": key}, engine)  # type: ignore[arg-type]
    get_settings.cache_clear()


@pytest.fixture
def batches(harness: Harness, tmp_path: Path) -> dict[str, str]:
    run("constitutions", "push", str(ROOT / "constitutions" / "default.yaml"))
    lines = EXAMPLE_PROMPTS.read_text().splitlines()
    ids = {}
    for name, chosen in (("red", lines[:4]), ("held", lines[4:7])):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(chosen) + "\n")
        ids[name] = as_json("batches", "upload", str(path), "--name", name)["id"]
    return ids


def _submit(batches: dict[str, str], *extra: str) -> dict[str, Any]:
    return as_json(  # type: ignore[no-any-return]
        "pipeline", "run", str(SPEC), "--prompts", batches["red"],
        "--eval-prompts", batches["held"], "--seed", "5", *extra,
    )  # fmt: skip


def _stages(pipeline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in pipeline["stages"]}


def test_a_pipeline_from_the_example_spec_to_its_report_then_a_rerun(
    harness: Harness, batches: dict[str, str]
) -> None:
    submitted = _submit(batches, "--name", "cli-recipe")
    assert (submitted["name"], submitted["state"]) == ("cli-recipe", "active")
    assert [s["name"] for s in submitted["stages"]] == STAGES
    assert submitted["spec"]["prompts"] == batches["red"]
    assert submitted["spec"]["eval_prompts"] == batches["held"]
    assert submitted["spec"]["ppo"]["config"]["total_steps"] == 4  # the example's
    pipeline_id = submitted["id"]
    assert "pipeline" in run("pipeline", "run", str(SPEC), "--prompts", batches["red"])

    early = run("pipeline", "report", pipeline_id, code=1)
    assert "elo stage has not completed (it is pending)" in early

    done = harness.until(pipeline_id, "completed", steps=24)
    text = run("pipeline", "status", pipeline_id)
    assert "┃ stage" in text and text.count("completed") == len(STAGES) + 1  # and the state
    for stage in done["stages"]:
        assert stage["name"] in text
    assert as_json("pipeline", "status", pipeline_id) == done
    attempts = as_json("pipeline", "attempts", pipeline_id)
    assert sorted(a["name"] for a in attempts) == sorted(STAGES)
    assert {(a["attempt"], a["status"]) for a in attempts} == {(1, "completed")}
    assert attempts[0]["inputs"]["body"]["batch_id"] == batches["red"]
    assert "sl_cai" in run("pipeline", "attempts", pipeline_id)
    listed = as_json("pipeline", "list")
    assert {p["id"]: p["state"] for p in listed}[pipeline_id] == "completed"
    assert "9/9" in run("pipeline", "list")

    # The report is the elo stage's policy evaluation's, printed as policy-eval prints it.
    eval_id = _stages(done)["elo"]["policy_eval_id"]
    report = run("pipeline", "report", pipeline_id)
    assert report == run("policy-eval", "report", eval_id)
    assert "harmlessness (" in report and "head to head" in report
    assert as_json("pipeline", "report", pipeline_id) == as_json("policy-eval", "report", eval_id)
    assert set(as_json("pipeline", "report", pipeline_id)["generations"]) == {
        "base", "base-prompted", "sft", "ppo", "dpo",
    }  # fmt: skip

    rerun = run("pipeline", "rerun", pipeline_id, "--from", "pm")
    assert "running again: pm, ppo, elo" in rerun and "active" in rerun
    again = _stages(harness.until(pipeline_id, "completed", steps=24))
    assert {n: s["attempt"] for n, s in again.items() if s["attempt"] > 1} == {
        "pm": 2, "ppo": 2, "elo": 2,
    }  # fmt: skip
    attempts = as_json("pipeline", "attempts", pipeline_id)
    assert [(a["attempt"], a["status"]) for a in attempts if a["name"] == "pm"] == [
        (1, "superseded"),
        (2, "completed"),
    ]
    refused = run("pipeline", "rerun", pipeline_id, "--from", "rloo", code=1)
    assert "body.stage" in refused


class Stepping:
    """The harness stepping in a thread (as the gateway, workers and trainer would) while
    a ``--watch`` polls from the test's."""

    def __init__(self, harness: Harness) -> None:
        self.harness, self.stop = harness, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.harness.step()
            self.stop.wait(0.02)

    def __enter__(self) -> Stepping:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_watch_follows_a_failure_and_resume_goes_on_to_the_report(
    harness: Harness, batches: dict[str, str]
) -> None:
    harness.fail_runs.add("pm")
    with Stepping(harness):
        failed = run(
            "pipeline", "run", str(SPEC), "--prompts", batches["red"],
            "--eval-prompts", batches["held"], "--watch", "--poll", "0.05", code=1,
        )  # fmt: skip
    pipeline_id = as_json("pipeline", "list")[0]["id"]
    assert f"pipeline {pipeline_id} failed: stage pm failed" in failed
    assert "out of memory" in failed
    assert f"charter pipeline resume {pipeline_id}" in failed
    for name in STAGES:  # the watch's last display: every stage's line
        assert name in failed
    status = _stages(as_json("pipeline", "status", pipeline_id))
    assert (status["pm"]["status"], status["dpo"]["status"]) == ("failed", "completed")
    assert status["ppo"]["status"] == "pending"

    with Stepping(harness):
        report = as_json("pipeline", "resume", pipeline_id, "--watch", "--poll", "0.05")
    assert report["complete"] and set(report["judges"]) == {"harmlessness"}
    done = _stages(as_json("pipeline", "status", pipeline_id))
    assert {s["status"] for s in done.values()} == {"completed"}
    assert done["pm"]["attempt"] == 1  # the same run, resumed from its checkpoint
    assert report["id"] == done["elo"]["policy_eval_id"]
    text = run("pipeline", "watch", pipeline_id)  # already completed: the report at once
    assert "harmlessness (" in text and "pm" in text
    assert "only a failed or cancelled pipeline resumes" in run(
        "pipeline", "resume", pipeline_id, code=1
    )


def test_cancel_then_resume(harness: Harness, batches: dict[str, str]) -> None:
    pipeline_id = _submit(batches)["id"]
    harness.app.state.pipelines.advance_all()
    cancelled = run("pipeline", "cancel", pipeline_id)
    assert f"pipeline {pipeline_id} cancelled (0/9 stages completed)" in cancelled
    sl_cai = _stages(as_json("pipeline", "status", pipeline_id))["sl_cai"]
    assert sl_cai["status"] == "cancelled"
    assert "cancelled" in run("pipeline", "status", pipeline_id)
    assert "already cancelled" in run("pipeline", "cancel", pipeline_id, code=1)
    watched = run("pipeline", "watch", pipeline_id, "--poll", "0.05", code=1)
    assert "was cancelled" in watched and f"charter pipeline resume {pipeline_id}" in watched
    resumed = as_json("pipeline", "resume", pipeline_id)
    assert resumed["state"] == "active"
    done = _stages(harness.until(pipeline_id, "completed", steps=24))
    assert done["sl_cai"]["attempt"] == 2


def test_bad_specs_and_arguments_are_a_line_and_a_status(
    harness: Harness, batches: dict[str, str], tmp_path: Path
) -> None:
    spec = yaml.safe_load(SPEC.read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec | {"sft": {"config": {"learning_rate": -1.0}}}))
    refused = run("pipeline", "run", str(bad), "--prompts", batches["red"], code=1)
    assert "body.sft.config.learning_rate" in refused
    as_json_spec = tmp_path / "bad.json"
    as_json_spec.write_text(json.dumps(spec | {"sl_cai": {"params": {"rounds": 9}}}))
    refused = run("pipeline", "run", str(as_json_spec), "--prompts", batches["red"], code=1)
    assert "body.sl_cai.params.rounds" in refused
    assert "--prompts" in run("pipeline", "run", str(SPEC), code=2)
    listed = tmp_path / "list.yaml"
    listed.write_text("- base_model: smollm2\n")
    assert "a mapping with base_model" in run("pipeline", "run", str(listed), code=2)
    assert "No such file" in run("pipeline", "run", str(tmp_path / "none.yaml"), code=2)
    missing = run("pipeline", "status", "0" * 32, code=1)
    assert "not found" in missing
    assert "--from" in run("pipeline", "rerun", "x", code=2)
