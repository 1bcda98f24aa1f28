"""Every API command of ``charter`` against a live gateway: tables for people,
``--json`` for scripts, errors as one line and a non-zero status."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from charter.cli.main import app
from charter.embedded import GatewayThread, free_port
from charter.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
SFT = [{"prompt": f"Say {i}.", "completion": f"{i}."} for i in range(4)]


@pytest.fixture
def live(monkeypatch: Any, make_settings: Any, engine: Any, issue: Any) -> Iterator[str]:
    """CHARTER_API_URL at a live gateway and CHARTER_API_KEY an admin key of it."""
    settings = make_settings()
    monkeypatch.setenv("CHARTER_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("CHARTER_SECRET_KEY", settings.secret_key)
    with GatewayThread(settings) as gateway:
        monkeypatch.setenv("CHARTER_API_URL", gateway.url)
        monkeypatch.setenv("CHARTER_API_KEY", issue("cli", ("admin",)).key)
        get_settings.cache_clear()
        yield gateway.url
    get_settings.cache_clear()


def invoke(*args: str, code: int = 0) -> Any:
    get_settings.cache_clear()
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result


def run(*args: str, code: int = 0) -> str:
    """What a person sees (stdout and stderr)."""
    return str(invoke(*args, code=code).output)


def as_json(*args: str) -> Any:
    """What a script reads: stdout is the JSON alone (progress and errors are on stderr)."""
    return json.loads(invoke(*args, "--json").stdout)


def test_constitutions_batches_and_jobs(live: str, tmp_path: Path) -> None:
    assert "default@1 (new version" in run(
        "constitutions", "push", str(ROOT / "constitutions" / "default.yaml")
    )
    document = json.loads(json.dumps(__import__("yaml").safe_load(
        (ROOT / "constitutions" / "default.yaml").read_text()
    )))  # fmt: skip
    document["critique_principles"] = document["critique_principles"][1:]
    (tmp_path / "v2.json").write_text(json.dumps(document))
    assert as_json("constitutions", "push", str(tmp_path / "v2.json"))["ref"] == "default@2"
    listed = run("constitutions", "list")
    assert "default" in listed and "latest" in listed and "┃" in listed  # a table
    assert [c["latest_version"] for c in as_json("constitutions", "list")] == [2]
    assert as_json("constitutions", "show", "default@1")["version"] == 1
    assert "critique principles" in run("constitutions", "show", "default")
    assert len(as_json("constitutions", "versions", "default")) == 2
    diff = run("constitutions", "diff", "default", "1", "2")
    assert "removed" in diff and "critique_principles" in diff
    assert as_json("constitutions", "diff", "default", "1", "2")["to_version"] == 2

    csv = tmp_path / "prompts.csv"
    csv.write_text("prompt\n" + "".join(f"q{i}\n" for i in range(5)))
    uploaded = run("batches", "upload", str(csv), "--name", "five")
    batch_id = uploaded.strip().splitlines()[-1]
    assert "5 rows" in uploaded
    assert as_json("batches", "show", batch_id)["row_count"] == 5
    assert [b["id"] for b in as_json("batches", "list")] == [batch_id]
    assert "five" in run("batches", "list")
    assert [p["prompt"] for p in as_json("batches", "prompts", batch_id)] == [
        f"q{i}" for i in range(5)
    ]

    job = as_json(
        "jobs", "submit", "--type", "sl_cai", "--batch", batch_id, "--model", "smollm2-135m"
    )
    assert job["status"] == "queued" and job["item_count"] == 5
    assert job["id"] in run("jobs", "list") and as_json("jobs", "list")[0]["id"] == job["id"]
    status = run("jobs", "status", job["id"])
    assert "item_count" in status and "queued" in status
    assert len(as_json("jobs", "items", job["id"])) == 5
    assert as_json("jobs", "cancel", job["id"])["status"] == "cancelled"
    watched = as_json("jobs", "watch", job["id"])
    assert watched[0]["status"] == "cancelled"
    assert as_json("jobs", "results", job["id"]) == []
    run("jobs", "results", job["id"], "--out", str(tmp_path / "labels.jsonl"))
    assert (tmp_path / "labels.jsonl").read_text() == ""
    assert as_json("workers", "list") == [] and "hostname" in run("workers", "list")


def test_datasets_training_keys_webhooks_audit(live: str, tmp_path: Path) -> None:
    rows = tmp_path / "sft.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in SFT))
    assert (
        run("datasets", "upload", "helpful", str(rows), "--kind", "sft")
        .strip()
        .endswith("helpful@1")
    )
    assert [d["ref"] for d in as_json("datasets", "list")] == ["helpful@1"]
    assert as_json("datasets", "show", "helpful")["row_count"] == len(SFT)
    assert "helpful@1" in run("datasets", "versions", "helpful")
    exported = as_json("datasets", "export", "helpful", str(tmp_path / "out.jsonl"))
    assert exported["rows"] == len(SFT)
    assert (tmp_path / "out.jsonl").read_bytes().count(b"\n") == len(SFT)

    run_id = run("train", "sft", "--dataset", "helpful", "--config", '{"max_steps": 2}')
    run_id = run_id.strip().splitlines()[-1]
    assert as_json("train", "show", run_id)["status"] == "queued"
    assert run_id in run("train", "list")
    assert as_json("train", "cancel", run_id)["status"] == "cancelled"
    assert "queued" in run("train", "resume", run_id)
    assert as_json("train", "metrics", run_id) == []
    run("train", "sft", "--dataset", "helpful", "--config", "{nope", code=2)

    made = as_json("keys", "create", "--scopes", "read", "--name", "ci")
    assert made["key"].startswith("chk_") and made["scopes"] == ["read"]
    assert "ci" in run("keys", "list")
    assert as_json("keys", "revoke", made["id"])["revoked_at"]

    hook = run("webhooks", "create", "https://example.com/hook", "--event", "job.completed")
    secret = hook.strip().splitlines()[-1]
    [listed] = as_json("webhooks", "list")
    assert listed["events"] == ["job.completed"] and secret and secret not in json.dumps(listed)
    assert as_json("webhooks", "update", listed["id"], "--disable")["enabled"] is False
    assert as_json("webhooks", "deliveries", listed["id"]) == []
    run("webhooks", "delete", listed["id"])
    assert as_json("webhooks", "list") == []

    events = as_json("audit", "list")
    routes = {e["route"] for e in events}
    assert "/v1/keys" in routes and "/v1/runs/{run_id}/cancel" in routes
    assert "/v1/keys" in run("audit", "list", "--route", "/v1/keys")
    assert as_json("reviews", "agreement")["verdicts"] == 0
    shipped = as_json("templates", "list")
    assert shipped and all(t["built_in"] for t in shipped)
    assert shipped[0]["ref"] in run("templates", "list")
    assert as_json("templates", "show", shipped[0]["ref"])["sha256"] == shipped[0]["sha256"]
    mine = tmp_path / "critique.yaml"
    mine.write_text("name: terse\ncritique: 'Briefly: {{ critique_request }}'\n")
    assert "terse@1 (new version" in run("templates", "push", str(mine), "--critique")
    critiques = [t["ref"] for t in as_json("templates", "list", "--critique")]
    assert critiques[-1] == "terse@1" and "quoted-response" in critiques
    shown = as_json("templates", "show", "terse", "--critique")
    assert shown["spec"]["critique"] == "Briefly: {{ critique_request }}"


def test_errors_are_one_line_and_a_status(live: str, tmp_path: Path, monkeypatch: Any) -> None:
    result = CliRunner().invoke(app, ["jobs", "status", "missing"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "404 not_found" in result.output and "job_id" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)

    bad = tmp_path / "bad.csv"
    bad.write_text("question\nwhat?\n")
    out = run("batches", "upload", str(bad), code=1)
    assert "422" in out and "line 1" in out
    assert "no such file" in run("batches", "upload", str(tmp_path / "none.csv"), code=2)
    assert "not JSON" in run("datasets", "create", "x", "--kind", "sft", "--filter", "{", code=2)

    monkeypatch.setenv("CHARTER_API_KEY", "chk_wrong_key")
    assert "401" in run("jobs", "list", code=1)
    monkeypatch.setenv("CHARTER_API_URL", f"http://127.0.0.1:{free_port()}")
    assert "cannot reach" in run("workers", "list", code=1)


def test_shell_completion_is_offered() -> None:
    out = run("--help")
    assert "--install-completion" in out and "--show-completion" in out
