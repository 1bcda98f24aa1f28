"""The one settings object refuses what must never reach production."""

from __future__ import annotations

import secrets

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
