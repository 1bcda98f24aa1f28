"""``charter eval`` against a live gateway: push a gold set, run an evaluation, read
its report as tables and as JSON; bad input is a line and a non-zero status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from charter.db.session import session_factory
from tests.cli.test_commands import ROOT, as_json, live, run  # noqa: F401 - live is a fixture
from workers.engines.scripted import ScriptedEngine
from workers.runner import ChunkRunner

GOLD = [
    {"prompt": f"Q{i}?", "response_a": "ok" if i % 2 else "a longer reply",
     "response_b": "a longer reply" if i % 2 else "ok", "answer": "a" if i < 3 else "b"}
    for i in range(6)
]  # fmt: skip


def _label_everything(engine: Engine, settings: Any, evaluation: dict[str, Any]) -> None:
    runner = ChunkRunner(
        session_factory(engine), {"m": ScriptedEngine(model_name="m")}, settings, "cli:1"
    )
    for job in evaluation["jobs"]:
        for chunk in range(as_json("jobs", "status", job["job_id"])["chunk_count"]):
            runner.run_chunk(job["job_id"], chunk)


def test_gold_sets_evaluations_and_reports(
    live: str,  # noqa: F811
    tmp_path: Path,
    engine: Engine,
    make_settings: Any,
) -> None:
    run("constitutions", "push", str(ROOT / "constitutions" / "default.yaml"))
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps(r) + "\n" for r in GOLD))
    assert "demo@1 (new version, 6 rows" in run("eval", "gold", "push", "demo", str(gold))
    assert "demo@1 (unchanged" in run("eval", "gold", "push", "demo", str(gold))
    assert [g["ref"] for g in as_json("eval", "gold", "list")] == ["demo@1"]

    evaluation = as_json(
        "eval", "run", "demo", "--constitution", "default", "--model", "m",
        "--template", "charter-chat", "--template", "paper-plain",
        "--params", '{"few_shot": false}', "--injection", "--attacks", "answer-prefix,bribe",
        "--max-items", "2",
    )  # fmt: skip
    assert [c["name"] for c in evaluation["configs"]] == ["charter-chat", "paper-plain"]
    assert len(evaluation["jobs"]) == 8
    assert "queued" in run("eval", "status", evaluation["id"])
    _label_everything(engine, make_settings(), evaluation)

    report = as_json("eval", "report", evaluation["id"])
    assert report["complete"] is True
    text = run("eval", "report", evaluation["id"], "--by", "category")
    for name, config in report["configs"].items():
        accuracy = config["metrics"]["accuracy"]
        assert name in text
        assert f"{accuracy['value']:.2f} ({accuracy['low']:.2f}-{accuracy['high']:.2f})" in text
    assert "Paired on the same gold items" in text
    assert "2 payloads on 2 gold items" in text and "no defences" in text
    listed = as_json("eval", "list")
    assert [e["id"] for e in listed] == [evaluation["id"]]
    attacks = as_json("eval", "attacks")
    assert len(attacks) >= 25 and len({a["family"] for a in attacks}) >= 7


def test_bad_evaluation_input_is_a_line_and_a_status(live: str) -> None:  # noqa: F811
    out = run("eval", "run", "demo", code=2)
    assert "--constitution" in out
    out = run("eval", "run", "nope", "--constitution", "default", code=1)
    assert "gold set 'nope' not found" in out
    out = run("eval", "report", "0" * 32, code=1)
    assert "not found" in out
    out = run("eval", "report", "x", "--by", "colour", code=2)
    assert "--by" in out
