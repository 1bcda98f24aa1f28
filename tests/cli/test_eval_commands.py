"""``charter eval`` against a live gateway: push a gold set, run an evaluation, read
its report as tables and as JSON; bad input is a line and a non-zero status."""

from __future__ import annotations

import json
import time
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


POLICY_SPEC = """
name: cli-elo
policies:
  - {name: base, model: m, sampling: {temperature: 0}}
  - {name: told, model: m, system_prompt: constitution}
judges:
  - {name: harmlessness, model: m, constitution: default, few_shot: false}
  - {name: helpfulness, model: m, constitution: default, few_shot: false, swap: false}
bootstrap: 100
"""


def test_a_policy_evaluation_from_a_spec_to_its_report_and_plot(
    monkeypatch: Any, make_settings: Any, engine: Engine, issue: Any, tmp_path: Path
) -> None:
    """The gateway advances it by itself (a short interval) while the test labels."""
    from charter.embedded import GatewayThread
    from charter.settings import get_settings

    settings = make_settings(policy_eval_advance_seconds=0.05)
    monkeypatch.setenv("CHARTER_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("CHARTER_SECRET_KEY", settings.secret_key)
    with GatewayThread(settings) as gateway:
        monkeypatch.setenv("CHARTER_API_URL", gateway.url)
        monkeypatch.setenv("CHARTER_API_KEY", issue("cli", ("admin",)).key)
        get_settings.cache_clear()
        run("constitutions", "push", str(ROOT / "constitutions" / "default.yaml"))
        prompts = tmp_path / "prompts.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": f"Q{i}?"}) + "\n" for i in range(4)))
        batch = as_json("batches", "upload", str(prompts))
        spec = tmp_path / "elo.yaml"
        spec.write_text(POLICY_SPEC)
        submitted = as_json("policy-eval", "run", str(spec), "--batch", batch["id"], "--seed", "3")
        assert (submitted["name"], submitted["stage"]) == ("cli-elo", "generating")
        runner = ChunkRunner(
            session_factory(engine), {"m": ScriptedEngine(model_name="m")}, settings, "cli:1"
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            evaluation = as_json("policy-eval", "status", submitted["id"])
            if evaluation["status"] in ("completed", "failed"):
                break
            for job in evaluation["jobs"]:
                for chunk in range(as_json("jobs", "status", job["job_id"])["chunk_count"]):
                    runner.run_chunk(job["job_id"], chunk)
            time.sleep(0.1)
        assert evaluation["status"] == "completed", evaluation
        assert evaluation["comparisons"] == 4

        report = as_json("policy-eval", "report", submitted["id"])
        text = run("policy-eval", "report", submitted["id"])
        for judge, result in report["judges"].items():
            assert f"{judge} (4 comparisons, 0 abstained; base = 0)" in text
            for r in result["ratings"]:
                assert r["policy"] in text
                assert f"{r['low']:+.0f} to {r['high']:+.0f}" in text
        assert "head to head" in text
        out = tmp_path / "elo.png"
        assert "wrote" in run("policy-eval", "plot", submitted["id"], "--out", str(out))
        assert out.read_bytes().startswith(b"\x89PNG")
        listed = as_json("policy-eval", "list")
        assert [e["id"] for e in listed] == [submitted["id"]]
        missing = run("policy-eval", "run", str(spec), code=2)
        assert "--batch" in missing
        bad = tmp_path / "bad.yaml"
        bad.write_text("policies: [{name: base, model: m}]\n")
        refused = run("policy-eval", "run", str(bad), "--batch", batch["id"], code=1)
        assert "body.policies" in refused and "at least 2" in refused
    get_settings.cache_clear()
