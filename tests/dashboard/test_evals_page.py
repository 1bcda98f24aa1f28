"""The evaluation pages in a real headless Chromium: the numbers on the page are the
report's, which the API tests check against hand computations on stored labels."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import Engine

from charter.db.session import session_factory
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
