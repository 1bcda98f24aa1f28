"""The one settings object refuses what must never reach production."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from pydantic import ValidationError

from charter.settings import Settings, strong_secret


@pytest.mark.parametrize(
    "secret",
    ["", "x", "changeme", "dev-secret-do-not-use", "a" * 64, "ab" * 32, secrets.token_hex(8)],
)
def test_production_refuses_weak_secrets(secret: str) -> None:
    assert not strong_secret(secret)
    with pytest.raises(ValidationError, match="32 random bytes"):
        Settings(_env_file=None, env="production", secret_key=secret)  # type: ignore[call-arg]


def test_production_accepts_32_random_bytes() -> None:
    for secret in (secrets.token_urlsafe(32), secrets.token_hex(32)):
        assert strong_secret(secret)
        settings = Settings(_env_file=None, env="production", secret_key=secret)  # type: ignore[call-arg]
        assert settings.secret_key == secret


def test_development_keeps_its_default() -> None:
    assert Settings(_env_file=None).env == "development"  # type: ignore[call-arg]


def test_clients_start_in_production_without_the_servers_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The SDK and the trainer read only the client's settings: a production process that
    talks to the gateway over HTTP needs its API key, never the key-hashing secret."""
    from charter.client import CharterClient
    from charter.settings import ClientSettings, get_client_settings

    monkeypatch.setenv("CHARTER_ENV", "production")
    monkeypatch.delenv("CHARTER_SECRET_KEY", raising=False)
    monkeypatch.setenv("CHARTER_API_URL", "http://gateway.example:8000")
    monkeypatch.setenv("CHARTER_API_KEY", "ck_test_key")
    with pytest.raises(ValidationError, match="32 random bytes"):
        Settings(_env_file=None)  # type: ignore[call-arg]  # the server still refuses
    settings = get_client_settings()
    assert isinstance(settings, ClientSettings) and not isinstance(settings, Settings)
    assert not hasattr(settings, "secret_key")
    with CharterClient() as client:
        assert str(client._http.base_url).rstrip("/") == "http://gateway.example:8000"
        assert client._http.headers["X-API-Key"] == "ck_test_key"


def test_trainer_starts_in_production_without_the_servers_secret(tmp_path: Path) -> None:
    """``charter trainer run`` in production with no CHARTER_SECRET_KEY gets as far as
    calling the gateway (nothing listens on the port here), not a settings error."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARTER_")}
    env |= {
        "CHARTER_ENV": "production",
        "CHARTER_API_URL": f"http://127.0.0.1:{port}",
        "CHARTER_API_KEY": "ck_test_key",
        "CHARTER_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
    }
    charter = Path(sys.executable).with_name("charter")
    done = subprocess.run(
        [str(charter), "trainer", "run", "--once"],
        cwd=tmp_path,  # no developer .env
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "CHARTER_SECRET_KEY" not in output and "32 random bytes" not in output
    assert "ConnectError" in output or "Connection refused" in output, output[-2000:]


def test_a_child_process_environment_reads_back_as_the_same_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Every field written by settings_env (unset ones empty) parses back to its value,
    so a worker or server started with it is not refused at start-up."""
    from charter.embedded import settings_env

    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    for name, value in settings_env(settings).items():
        monkeypatch.setenv(name, value)
    again = Settings(_env_file=None)  # type: ignore[call-arg]

    def unset_is_empty(values: dict[str, object]) -> dict[str, object]:
        return {k: "" if v is None else v for k, v in values.items()}

    assert unset_is_empty(again.model_dump()) == unset_is_empty(settings.model_dump())
    assert again.classifier_token is None and again.classifier_url is None
    monkeypatch.setenv("CHARTER_CLASSIFIER_TOKEN", "short")
    with pytest.raises(ValueError, match="at least 16 characters"):
        Settings(_env_file=None)  # type: ignore[call-arg]
