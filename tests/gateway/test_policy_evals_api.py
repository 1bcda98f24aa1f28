"""Policy evaluations over the API, run on the workers' code path with scripted models.

Three policies answer six prompts: ``base`` briefly, ``told`` (the same model told its
constitution) at length, ``reckless`` at greater length with a harmful instruction.
A harmlessness judge refuses the harmful answer; a helpfulness judge prefers the longer
one. The report's scores are checked against a fit of the stored labels, read back by
their response text (not through the evaluation's own bookkeeping).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine

from charter.core import elo
from charter.db.models import Label, PolicyEval, Prompt
from charter.db.session import session_factory
from tests.conftest import EXAMPLE_PROMPTS, ROOT
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

HARM = "HARM: here is how to make a weapon at home, step by step."
ANSWERS = {
    "base": "A short answer.",
    "told": "A careful, complete answer with the steps and the reasons.",
    "reckless": "Sure, a very long and eager answer with everything. " + HARM,
}


def _respond(conversation: Any, params: Any) -> str:
    if "Answer in keeping with this constitution." in conversation[0]["content"]:
        return ANSWERS["told"]
    return ANSWERS["base"]


def _pair(conversation: Any) -> tuple[str, str]:
    last = conversation[-1]["content"]
    a_at = last.rfind("(A) <response>\n")  # the last pair: few-shot examples come first
    b_at = last.find("\n(B) <response>\n", a_at)
    return last[a_at:b_at], last[b_at:].split("</response>")[0]


def harmlessness(conversation: Any, prefix: str, choices: Any) -> tuple[float, float]:
    a, b = _pair(conversation)
    if ("HARM" in a) != ("HARM" in b):
        return (-3.0, -0.05) if "HARM" in a else (-0.05, -3.0)
    return (-0.4, -1.1) if len(a) > len(b) else (-1.1, -0.4)  # careful beats curt


def helpfulness(conversation: Any, prefix: str, choices: Any) -> tuple[float, float]:
    a, b = _pair(conversation)
    return (-0.2, -1.8) if len(a) > len(b) else (-1.8, -0.2)


ENGINES = {
    "m": ScriptedEngine(model_name="m", responses=_respond),
    "tiny-model": ScriptedEngine(model_name="tiny-model", responses={}),
    "smollm2": ScriptedEngine(model_name="smollm2", choice_fn=harmlessness),
    "smollm2-135m": ScriptedEngine(model_name="smollm2-135m", choice_fn=helpfulness),
}


def _reckless(conversation: Any, params: Any) -> str:
    return ANSWERS["reckless"]


ENGINES["tiny-model"].responses = _reckless


@pytest.fixture
def setup(api: Any, admin_headers: dict[str, str]) -> dict[str, Any]:
    api.push_default(admin_headers)
    helpful = yaml.safe_load((ROOT / "constitutions" / "helpful-balance.yaml").read_text())
    api.push(admin_headers, helpful)
    prompts = [json.loads(line)["prompt"] for line in EXAMPLE_PROMPTS.read_text().splitlines()]
    return api.create_batch(admin_headers, [{"prompt": p} for p in prompts[:6]], name="eval")


def _body(batch_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "recipe",
        "batch_id": batch_id,
        "policies": [
            {"name": "base", "model": "m", "sampling": {"temperature": 0}},
            {"name": "told", "model": "m", "system_prompt": "constitution"},
            {"name": "reckless", "model": "tiny-model"},
        ],
        "judges": [
            {"name": "harmlessness", "model": "smollm2", "constitution": "default"},
            {
                "name": "helpfulness",
                "model": "smollm2-135m",
                "constitution": "helpful-balance",
                "few_shot": False,
            },
        ],
        "bootstrap": 200,
        "seed": 11,
        **extra,
    }


def _run(engine: Engine, settings: Any, client: TestClient, headers: dict[str, str], jobs):
    runner = ChunkRunner(session_factory(engine), ENGINES, settings, "host:1")
    for job in jobs:
        detail = client.get(f"/v1/jobs/{job['job_id']}", headers=headers).json()
        for chunk in range(detail["chunk_count"]):
            runner.run_chunk(job["job_id"], chunk)


def _labels_by_text(engine: Engine, job_id: str) -> list[elo.Comparison]:
    """The judge's labels as comparisons, the policies read from the response texts."""
    policy_of = {text: name for name, text in ANSWERS.items()}
    with session_factory(engine)() as s:
        rows = s.execute(
            select(Prompt.prompt, Label.response_a, Label.response_b, Label.p_a)
            .join(Prompt, Prompt.id == Label.prompt_id)
            .where(Label.job_id == job_id)
        ).all()
    return [elo.Comparison(policy_of[a], policy_of[b], p, prompt) for prompt, a, b, p in rows]


def test_policies_are_rated_per_judge_from_the_stored_labels(
    app: FastAPI,
    client: TestClient,
    admin_headers: dict[str, str],
    engine: Engine,
    settings: Any,
    setup: dict[str, Any],
) -> None:
    submitted = client.post("/v1/policy-evals", json=_body(setup["id"]), headers=admin_headers)
    assert submitted.status_code == 202, submitted.text
    evaluation = submitted.json()
    assert (evaluation["stage"], evaluation["status"], evaluation["anchor"]) == (
        "generating",
        "queued",
        "base",
    )
    assert evaluation["plot"] == ["helpfulness", "harmlessness"]
    assert [j["constitution"] for j in evaluation["judges"]] == ["default@1", "helpful-balance@1"]
    assert [(j["role"], j["name"]) for j in evaluation["jobs"]] == [
        ("generate", "base"),
        ("generate", "told"),
        ("generate", "reckless"),
    ]
    eval_id = evaluation["id"]
    pending = client.get(f"/v1/policy-evals/{eval_id}/report", headers=admin_headers).json()
    assert pending["judges"]["harmlessness"]["ratings"] == []
    assert pending["judges"]["harmlessness"]["rating_error"] == "no comparison scored yet"
    no_plot = client.get(f"/v1/policy-evals/{eval_id}/plot.png", headers=admin_headers)
    assert no_plot.status_code == 404 and no_plot.json()["field"] == "plot"

    advancer = app.state.policy_evals
    _run(engine, settings, client, admin_headers, evaluation["jobs"][:2])
    assert advancer.advance_all() == 0  # reckless has not answered yet
    _run(engine, settings, client, admin_headers, evaluation["jobs"][2:])
    assert advancer.advance_all() == 1
    assert advancer.advance_all() == 0  # advanced once
    comparing = client.get(f"/v1/policy-evals/{eval_id}", headers=admin_headers).json()
    assert (comparing["stage"], comparing["status"], comparing["comparisons"]) == (
        "comparing",
        "running",
        6 * 3,
    )
    compare_jobs = [j for j in comparing["jobs"] if j["role"] == "compare"]
    assert [j["name"] for j in compare_jobs] == ["harmlessness", "helpfulness"]
    first = client.get(f"/v1/jobs/{compare_jobs[0]['job_id']}", headers=admin_headers).json()
    assert (first["type"], first["constitution"], first["item_count"]) == (
        "compare",
        "default@1",
        18,
    )

    _run(engine, settings, client, admin_headers, compare_jobs)
    report = client.get(f"/v1/policy-evals/{eval_id}/report", headers=admin_headers).json()
    assert (report["status"], report["complete"]) == ("completed", True)
    assert report["generations"] == {
        name: {"answered": 6, "prompts": 6} for name in ("base", "told", "reckless")
    }
    for judge, order in (
        ("harmlessness", ["told", "base", "reckless"]),
        ("helpfulness", ["reckless", "told", "base"]),
    ):
        got = report["judges"][judge]
        assert (got["scored"], got["abstained"]) == (18, 0)
        assert [r["policy"] for r in got["ratings"]] == order
        expected = elo.fit(_labels_by_text(engine, got["job_id"]), anchor="base")
        for rating in got["ratings"]:
            assert rating["elo"] == pytest.approx(expected[rating["policy"]], abs=1e-6)
            assert rating["low"] <= rating["elo"] <= rating["high"]
            assert rating["comparisons"] == 12
        base = next(r for r in got["ratings"] if r["policy"] == "base")
        assert base["elo"] == 0
    shares = {(h["a"], h["b"]): h for h in report["judges"]["harmlessness"]["head_to_head"]}
    assert shares[("base", "reckless")]["a_preferred"] > 0.9
    assert shares[("base", "reckless")]["comparisons"] == 6

    image = client.get(f"/v1/policy-evals/{eval_id}/plot.png", headers=admin_headers)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    listed = client.get("/v1/policy-evals", headers=admin_headers).json()
    assert [e["id"] for e in listed["items"]] == [eval_id]
    assert listed["items"][0]["status"] == "completed"


def test_bad_specs_are_refused_naming_the_field(
    client: TestClient, admin_headers: dict[str, str], setup: dict[str, Any]
) -> None:
    batch = setup["id"]
    base = _body(batch)
    cases = [
        ({"batch_id": "0" * 32}, 404, "body.batch_id"),
        ({"policies": base["policies"][:1]}, 422, "body.policies"),
        (
            {"policies": [*base["policies"][:2], {"name": "x", "model": "nobody-serves-this"}]},
            422,
            "body.policies.2.model",
        ),
        (
            {"judges": [{**base["judges"][0], "constitution": "missing"}]},
            404,
            "body.judges.0.constitution",
        ),
        (
            {"judges": [{**base["judges"][0], "principle": "no-such"}]},
            422,
            "body.judges.0.principle",
        ),
        ({"anchor": "nobody"}, 422, "body"),
        ({"plot": ["harmlessness", "harmlessness"]}, 422, "body"),
        ({"policies": [base["policies"][0], base["policies"][0]]}, 422, "body"),
    ]
    for change, code, field in cases:
        response = client.post("/v1/policy-evals", json=base | change, headers=admin_headers)
        assert response.status_code == code, (change, response.text)
        assert response.json()["field"] == field, (change, response.json())
    assert client.get("/v1/policy-evals", headers=admin_headers).json()["items"] == []
    assert client.get("/v1/jobs", headers=admin_headers).json()["items"] == []


def test_a_cancelled_evaluation_is_never_advanced(
    app: FastAPI,
    client: TestClient,
    admin_headers: dict[str, str],
    engine: Engine,
    settings: Any,
    setup: dict[str, Any],
) -> None:
    evaluation = client.post(
        "/v1/policy-evals", json=_body(setup["id"]), headers=admin_headers
    ).json()
    _run(engine, settings, client, admin_headers, evaluation["jobs"][:1])
    cancelled = client.post(f"/v1/policy-evals/{evaluation['id']}/cancel", headers=admin_headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert [j["status"] for j in cancelled.json()["jobs"]] == [
        "completed",
        "cancelled",
        "cancelled",
    ]
    assert app.state.policy_evals.advance_all() == 0
    again = client.get(f"/v1/policy-evals/{evaluation['id']}", headers=admin_headers).json()
    assert (again["stage"], again["status"]) == ("cancelled", "cancelled")
    assert [j["role"] for j in again["jobs"]] == ["generate"] * 3  # no judge was submitted


def test_a_generation_cancelled_on_its_own_cancels_the_evaluation(
    app: FastAPI, client: TestClient, admin_headers: dict[str, str], setup: dict[str, Any]
) -> None:
    evaluation = client.post(
        "/v1/policy-evals", json=_body(setup["id"]), headers=admin_headers
    ).json()
    job_id = evaluation["jobs"][1]["job_id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=admin_headers).status_code == 200
    assert app.state.policy_evals.advance_all() == 1
    again = client.get(f"/v1/policy-evals/{evaluation['id']}", headers=admin_headers).json()
    assert (again["stage"], again["status"]) == ("cancelled", "cancelled")
    assert {j["status"] for j in again["jobs"]} == {"cancelled"}  # its siblings too
    assert app.state.policy_evals.advance_all() == 0  # no longer looked at


def test_cancelling_while_comparing_cancels_the_judges_jobs(
    app: FastAPI,
    client: TestClient,
    admin_headers: dict[str, str],
    engine: Engine,
    settings: Any,
    setup: dict[str, Any],
) -> None:
    evaluation = client.post(
        "/v1/policy-evals", json=_body(setup["id"]), headers=admin_headers
    ).json()
    _run(engine, settings, client, admin_headers, evaluation["jobs"])
    assert app.state.policy_evals.advance_all() == 1
    cancelled = client.post(f"/v1/policy-evals/{evaluation['id']}/cancel", headers=admin_headers)
    body = cancelled.json()
    assert (body["stage"], body["status"]) == ("comparing", "cancelled")
    assert [(j["role"], j["status"]) for j in body["jobs"]] == [("generate", "completed")] * 3 + [
        ("compare", "cancelled")
    ] * 2


def test_an_anchor_that_answered_nothing_fails_the_evaluation(
    app: FastAPI,
    client: TestClient,
    admin_headers: dict[str, str],
    engine: Engine,
    make_settings: Any,
    setup: dict[str, Any],
) -> None:
    """Every item of the anchor's generation fails (its model raises): no score could be
    given relative to it, so the evaluation says so instead of reporting nothing forever."""

    def broken(conversation: Any, params: Any) -> str:
        raise RuntimeError("the model is broken")

    body = _body(setup["id"], anchor="reckless")
    evaluation = client.post("/v1/policy-evals", json=body, headers=admin_headers).json()
    engines = ENGINES | {"tiny-model": ScriptedEngine(model_name="tiny-model", responses=broken)}
    runner = ChunkRunner(session_factory(engine), engines, make_settings(max_attempts=1), "h:1")
    for job in evaluation["jobs"]:
        chunks = client.get(f"/v1/jobs/{job['job_id']}", headers=admin_headers).json()
        for chunk in range(chunks["chunk_count"]):
            runner.run_chunk(job["job_id"], chunk)
    assert app.state.policy_evals.advance_all() == 1
    failed = client.get(f"/v1/policy-evals/{evaluation['id']}", headers=admin_headers).json()
    assert (failed["stage"], failed["status"]) == ("failed", "failed")
    assert failed["error"] == "the anchor policy 'reckless' answered no prompt"


def test_a_report_too_costly_to_fit_is_refused_at_submission(
    api: Any, client: TestClient, admin_headers: dict[str, str], setup: dict[str, Any]
) -> None:
    big = api.create_batch(admin_headers, [{"prompt": f"Q{i}?"} for i in range(400)], name="big")
    response = client.post(
        "/v1/policy-evals", json=_body(big["id"], bootstrap=10_000), headers=admin_headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "body.bootstrap"
    assert "1,200 comparisons x 10000 bootstrap samples" in response.json()["detail"]


def test_one_evaluation_that_cannot_advance_holds_up_no_other(
    app: FastAPI,
    client: TestClient,
    admin_headers: dict[str, str],
    engine: Engine,
    settings: Any,
    setup: dict[str, Any],
    caplog: Any,
) -> None:
    first, second = (
        client.post("/v1/policy-evals", json=_body(setup["id"]), headers=admin_headers).json()
        for _ in range(2)
    )
    _run(engine, settings, client, admin_headers, first["jobs"] + second["jobs"])
    with session_factory(engine)() as session, session.begin():  # a config no code can read
        broken = session.get_one(PolicyEval, first["id"])
        broken.judges = [{"name": "harmlessness", "unknown": True}]
    assert app.state.policy_evals.advance_all() == 1
    assert "advancing failed" in caplog.text
    states = {
        e["id"]: e["stage"]
        for e in client.get("/v1/policy-evals", headers=admin_headers).json()["items"]
    }
    assert states == {first["id"]: "generating", second["id"]: "comparing"}


def test_a_gateway_advances_on_its_own(
    make_client: Any,
    admin_headers: dict[str, str],
    engine: Engine,
    settings: Any,
    setup: dict[str, Any],
) -> None:
    """The test apps advance only when told (a long interval); a gateway started with a
    short one submits the judges' jobs by itself once the generations are done."""
    client = make_client(policy_eval_advance_seconds=0.05)
    evaluation = client.post(
        "/v1/policy-evals", json=_body(setup["id"]), headers=admin_headers
    ).json()
    _run(engine, settings, client, admin_headers, evaluation["jobs"])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = client.get(f"/v1/policy-evals/{evaluation['id']}", headers=admin_headers).json()
        if now["stage"] != "generating":
            break
        time.sleep(0.05)
    assert now["stage"] == "comparing", now
    assert [j["role"] for j in now["jobs"]] == ["generate"] * 3 + ["compare"] * 2
