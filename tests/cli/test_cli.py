"""The ``charter`` command against a real gateway: bootstrap, push, upload, submit, status."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from charter.cli.main import app
from charter.embedded import GatewayThread
from charter.settings import get_settings

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture
def cli_env(monkeypatch, make_settings, engine):
    """CHARTER_* variables pointing the CLI at the test database and a live gateway."""
    settings = make_settings()
    monkeypatch.setenv("CHARTER_DATABASE_URL", settings.effective_database_url)
    monkeypatch.setenv("CHARTER_SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("CHARTER_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    with GatewayThread(settings) as gateway:
        monkeypatch.setenv("CHARTER_API_URL", gateway.url)
        yield
    get_settings.cache_clear()


def invoke(*args: str):
    get_settings.cache_clear()
    return CliRunner().invoke(app, list(args))


def test_bootstrap_push_upload_submit_status(cli_env, monkeypatch):
    created = invoke("keys", "create", "--project", "cli", "--scopes", "admin")
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert key.startswith("chk_")
    monkeypatch.setenv("CHARTER_API_KEY", key)

    pushed = invoke("constitutions", "push", str(ROOT / "constitutions" / "default.yaml"))
    assert pushed.exit_code == 0 and "default@1 (new version" in pushed.output
    again = invoke("constitutions", "push", str(ROOT / "constitutions" / "default.yaml"))
    assert "default@1 (unchanged" in again.output

    uploaded = invoke("batches", "upload", str(ROOT / "examples" / "prompts.jsonl"))
    assert uploaded.exit_code == 0, uploaded.output
    batch_id = uploaded.output.strip().splitlines()[-1]

    submitted = invoke(
        "jobs", "submit", "--type", "sl_cai", "--batch", batch_id, "--params", '{"rounds": 2}'
    )
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.output.strip().splitlines()[-1]
    status = invoke("jobs", "status", job_id, "--json")
    assert status.exit_code == 0
    assert json.loads(status.output)["params"]["rounds"] == 2


def test_api_errors_are_reported_not_raised(cli_env, monkeypatch):
    key = (
        invoke("keys", "create", "--project", "cli", "--scopes", "read")
        .output.strip()
        .splitlines()[-1]
    )
    monkeypatch.setenv("CHARTER_API_KEY", key)
    result = invoke(
        "jobs", "submit", "--type", "sl_cai", "--batch", "nope", "--params", '{"rounds": 9}'
    )
    assert result.exit_code == 1
    assert "403" in result.output and "Traceback" not in result.output
    bad_json = invoke("jobs", "submit", "--type", "sl_cai", "--batch", "x", "--params", "{oops")
    assert bad_json.exit_code == 2 and "not JSON" in bad_json.output


def test_bad_scope_is_a_clear_error(cli_env):
    result = invoke("keys", "create", "--project", "cli", "--scopes", "root")
    assert result.exit_code == 1 and "scopes" in result.output
