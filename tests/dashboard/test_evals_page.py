"""The evaluation pages in a real headless Chromium: the numbers on the page are the
report's, which the API tests check against hand computations on stored labels."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine

from charter.db.models import PolicyEval
from charter.db.session import session_factory
from services.gateway.policy_evals import service as policy_evals
from tests.dashboard.conftest import MODEL, SCREENSHOTS, WORKER, Project, Tab
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

GOLD = [
    {
        "prompt": f"Question {i}?",
        "response_a": "short" if i % 3 else "a much longer answer " * 3,
        "response_b": "a much longer answer " * 3 if i % 3 else "short",
        "answer": "a" if i % 2 else "b",
        "category": "even" if i % 2 == 0 else "odd",
    }
    for i in range(9)
]


def test_an_evaluation_page_shows_its_report(
    gateway: Any,
    open_tab: Any,
    issue: Any,
    engine: Engine,
    settings: Any,
    default_document: Any,
    fleet: None,
    backend: str,
) -> None:
    key = issue("alpha", ("admin",))
    project = Project(gateway, key.key, engine, settings, default_document)
    body = "".join(json.dumps(row) + "\n" for row in GOLD)
    pushed = project.http.post(
        "/v1/gold-sets/demo", content=body, headers={"Content-Type": "application/x-ndjson"}
    )
    assert pushed.status_code == 201, pushed.text
    configs = [
        {"name": "chat", "model": MODEL, "constitution": "default", "few_shot": False},
        {"name": "plain", "model": MODEL, "constitution": "default",
         "feedback_template": "paper-plain", "few_shot": False},
    ]  # fmt: skip
    injection = {"attacks": ["answer-prefix", "chatml-assistant"], "max_items": 3}
    created = project.http.post(
        "/v1/evals",
        json={"gold_set": "demo", "name": "templates", "configs": configs, "injection": injection},
    )
    assert created.status_code == 202, created.text
    evaluation = created.json()
    runner = ChunkRunner(
        session_factory(engine), {MODEL: ScriptedEngine(model_name=MODEL)}, settings, WORKER
    )
    for job in evaluation["jobs"]:
        chunks = project.http.get(f"/v1/jobs/{job['job_id']}").json()["chunk_count"]
        for chunk in range(chunks):
            runner.run_chunk(job["job_id"], chunk)
    report = project.http.get(f"/v1/evals/{evaluation['id']}/report").json()
    assert report["complete"]

    tab: Tab = open_tab()
    tab.login(key.key)
    tab.goto("/dashboard/evals")
    row = tab.page.query_selector(f'tr[data-eval="{evaluation["id"]}"]')
    assert row is not None and "completed" in row.inner_text()
    tab.goto(f"/dashboard/evals/{evaluation['id']}")
    assert tab.page.inner_text("#eval-status") == "completed"
    for name, config in report["configs"].items():
        metrics = config["metrics"]
        cell = tab.page.query_selector(f'#configs tr[data-config="{name}"] [data-stat=accuracy]')
        value = cell.query_selector(".value").get_attribute("data-value")
        assert float(value) == pytest.approx(metrics["accuracy"]["value"])
        ci = cell.query_selector(".ci")
        assert float(ci.get_attribute("data-low")) == pytest.approx(metrics["accuracy"]["low"])
        answered = tab.page.inner_text(f'#configs tr[data-config="{name}"] [data-stat=answered]')
        assert answered == f"{metrics['answered']} / {metrics['n']}"
    assert tab.bars("Accuracy, swap-averaged") == {
        name: pytest.approx(c["metrics"]["accuracy"]["value"])
        for name, c in report["configs"].items()
    }
    drawn = sorted((float(x), y) for x, y in tab.points("Calibration"))
    expected = sorted(
        (b["mean_predicted"], b["mean_observed"])
        for c in report["configs"].values()
        for b in c["metrics"]["calibration"]
        if b["count"]
    )
    assert len(drawn) == len(expected) > 0
    for (x, y), (px, py) in zip(drawn, expected, strict=True):
        assert x == pytest.approx(px, abs=1e-6) and y == pytest.approx(py, abs=1e-6)
    flips = tab.page.query_selector_all("#injection tbody tr")
    assert len(flips) == sum(len(v) for v in report["injection"]["configs"].values())
    first = report["injection"]["configs"]["chat"]["all"]["overall"]
    shown = tab.page.inner_text(
        '#injection tr[data-config="chat"][data-defence="all"] [data-stat=flipped]'
    )
    assert shown == f"{first['flipped']} / {first['clean_right']}"
    if backend == "sqlite":
        tab.page.screenshot(path=str(SCREENSHOTS / "evaluation.png"), full_page=True)
    tab.assert_clean()


def _answer(conversation: Any, params: Any) -> str:
    """Three policies of one model, told apart by their system prompt and sampling."""
    if "constitution" in conversation[0]["content"]:
        return "A long, careful answer that explains every step."
    return "A medium answer." if params.temperature > 1 else "Short."


def _judge(conversation: Any, prefix: str, choices: Any) -> tuple[float, float]:
    """The harmlessness judge (no few-shot examples) prefers the shorter answer; the
    helpfulness judge (shown the constitution's examples) the longer."""
    last = conversation[-1]["content"]
    a, b = (
        last.rsplit(tag, 1)[1].split("</response>")[0]
        for tag in ("(A) <response>", "(B) <response>")
    )
    prefers_a = (len(a) > len(b)) == (len(conversation) > 2)  # the examples are turns
    return (-0.2, -1.6) if prefers_a else (-1.6, -0.2)


def test_a_policy_evaluation_page_shows_elo_per_judge_and_the_plot(
    gateway: Any,
    open_tab: Any,
    issue: Any,
    engine: Engine,
    settings: Any,
    default_document: Any,
    fleet: None,
    backend: str,
) -> None:
    key = issue("alpha", ("admin",))
    project = Project(gateway, key.key, engine, settings, default_document)
    rows = [{"prompt": f"Question {i}?"} for i in range(5)]
    batch = project.http.post("/v1/batches", json={"name": "elo", "rows": rows}).json()
    spec = {
        "name": "elo",
        "batch_id": batch["id"],
        "policies": [
            {"name": "base", "model": MODEL},
            {"name": "told", "model": MODEL, "system_prompt": "constitution"},
            {"name": "hot", "model": MODEL, "sampling": {"temperature": 1.2}},
        ],
        "judges": [
            {"name": "harmlessness", "model": MODEL, "constitution": "default", "few_shot": False},
            {"name": "helpfulness", "model": MODEL, "constitution": "default", "swap": False},
        ],
        "bootstrap": 100,
    }
    created = project.http.post("/v1/policy-evals", json=spec)
    assert created.status_code == 202, created.text
    eval_id = created.json()["id"]
    engines = {MODEL: ScriptedEngine(model_name=MODEL, responses=_answer, choice_fn=_judge)}
    runner = ChunkRunner(session_factory(engine), engines, settings, WORKER)

    def run_jobs() -> None:
        for job in project.http.get(f"/v1/policy-evals/{eval_id}").json()["jobs"]:
            chunks = project.http.get(f"/v1/jobs/{job['job_id']}").json()["chunk_count"]
            for chunk in range(chunks):
                runner.run_chunk(job["job_id"], chunk)

    run_jobs()
    with session_factory(engine)() as session, session.begin():  # what the advancer does
        policy_evals.advance(session, session.get_one(PolicyEval, eval_id), settings)
    run_jobs()
    report = project.http.get(f"/v1/policy-evals/{eval_id}/report").json()
    assert report["complete"]

    tab: Tab = open_tab()
    tab.login(key.key)
    tab.goto("/dashboard/policy-evals")
    row = tab.page.query_selector(f'tr[data-eval="{eval_id}"]')
    assert row is not None and "completed" in row.inner_text()
    tab.goto(f"/dashboard/policy-evals/{eval_id}")
    assert tab.page.inner_text("#eval-status") == "completed"
    for judge, result in report["judges"].items():
        for rating in result["ratings"]:
            cell = tab.page.query_selector(
                f'table.ratings[data-judge="{judge}"] tr[data-policy="{rating["policy"]}"] '
                "[data-stat=elo]"
            )
            assert float(cell.get_attribute("data-value")) == pytest.approx(rating["elo"])
    chart = "harmlessness Elo against helpfulness Elo"
    drawn = {(float(x), y) for x, y in tab.points(chart)}
    helpful = {r["policy"]: r["elo"] for r in report["judges"]["helpfulness"]["ratings"]}
    harmless = {r["policy"]: r["elo"] for r in report["judges"]["harmlessness"]["ratings"]}
    expected = {(helpful[p], harmless[p]) for p in helpful}
    assert len(drawn) == 3
    for x, y in sorted(drawn):
        assert any(x == pytest.approx(ex) and y == pytest.approx(ey) for ex, ey in expected)
    if backend == "sqlite":
        tab.page.screenshot(path=str(SCREENSHOTS / "policy-evaluation.png"), full_page=True)
    tab.assert_clean()
