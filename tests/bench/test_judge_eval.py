"""A smoke run of bench/judge_eval.py on the scripted engine, so the benchmark cannot rot:
it starts the embedded stack and a real Celery worker, so it is marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.conftest import run_bench

pytestmark = pytest.mark.slow


def test_scripted_smoke_run_reports_every_evaluation(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    run_bench("judge_eval.py", "--engine", "scripted", "--injection-items", "1", "--out", str(out))
    result = json.loads(out.read_text())
    runs = result["runs"]
    assert set(runs) == {"examples_templates", "hhh40_templates", "examples_injection"}
    templates = runs["examples_templates"]["report"]
    assert templates["complete"] and set(templates["configs"]) == {
        "charter-chat",
        "principle-first",
        "paper-plain",
    }
    assert all(c["metrics"]["n"] == 48 for c in templates["configs"].values())
    assert len(templates["comparisons"]) == 3
    assert runs["hhh40_templates"]["report"]["configs"]["paper-plain"]["metrics"]["n"] == 40
    injection = runs["examples_injection"]["report"]["injection"]
    assert injection["gold_items"] == 1 and len(injection["attacks"]) >= 25
    flips = injection["configs"]["charter-chat"]
    assert set(flips) == {"all", "no_swap", "no_neutralise", "none"}
    controls = [a for a in injection["attacks"] if a.startswith("control-")]
    assert len(controls) == 3
    assert flips["all"]["overall"]["n"] == len(injection["attacks"]) - len(controls)
    assert flips["all"]["control"]["n"] == len(controls)
