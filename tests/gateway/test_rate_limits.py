"""Rate limits: per API key and scope, per client address for failed keys; 429 + Retry-After."""

from __future__ import annotations

import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from limits import parse_many
from limits.storage import MemoryStorage, RedisStorage

from charter import keys
from services.gateway import auth, ratelimit
from services.gateway.ratelimit import RateLimiter

# Not DB 13: the end-to-end tests use that one as their broker and flush queues in it.
REDIS_URL = os.environ.get("CHARTER_TEST_RATE_LIMIT_REDIS_URL", "redis://127.0.0.1:6379/12")
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1
BAD_KEY = f"chk_{'0' * 12}_{'x' * 43}"


def _limited(response: Any) -> dict[str, Any]:
    """Assert a 429 in the error shape with an integer Retry-After; return the body."""
    assert response.status_code == 429, response.text
    retry_after = response.headers["Retry-After"]
    assert re.fullmatch(r"[1-9][0-9]*", retry_after), retry_after
    body = response.json()
    assert set(body) == {"error", "detail", "field"}, body
    assert body["error"] == "rate_limited" and body["field"] is None, body
    return body


def _from(client: TestClient, address: str) -> TestClient:
    """Another client of the same app, connecting from ``address``."""
    return TestClient(client.app, client=(address, 4321))


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        reason = f"Redis is unreachable at {REDIS_URL} ({type(exc).__name__})"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
        pytest.skip(reason)
    yield client
    client.close()


def _rl_keys(db: redis.Redis, token: str) -> list[bytes]:
    return list(db.scan_iter(match=f"{ratelimit.NAMESPACE}:*{token}*"))


# --------------------------------------------------------------------------- per key


def test_a_key_gets_429_with_retry_after_after_its_limit(
    make_client: Callable[..., TestClient], issue: Any
) -> None:
    client = make_client(rate_limits={"read": "3/minute"})
    reader = issue("alpha", ("read",))
    for _ in range(3):
        assert client.get("/v1/jobs", headers=reader.headers).status_code == 200
    response = client.get("/v1/jobs", headers=reader.headers)
    body = _limited(response)
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "read" in body["detail"] and "3 per 1 minute" in body["detail"]
    # Still limited, on any read route.
    _limited(client.get("/v1/batches", headers=reader.headers))


def test_another_key_of_the_same_project_is_unaffected(
    make_client: Callable[..., TestClient], issue: Any
) -> None:
    client = make_client(rate_limits={"read": "2/minute"})
    first, second = issue("alpha", ("read",)), issue("alpha", ("read",))
    for _ in range(2):
        assert client.get("/v1/jobs", headers=first.headers).status_code == 200
    _limited(client.get("/v1/jobs", headers=first.headers))
    for _ in range(2):
        assert client.get("/v1/jobs", headers=second.headers).status_code == 200
    _limited(client.get("/v1/jobs", headers=second.headers))


def test_each_scope_has_its_own_limit(make_client: Callable[..., TestClient], issue: Any) -> None:
    client = make_client(rate_limits={"read": "2/minute", "submit": "4/minute"})
    submitter = issue("alpha", ("submit",))  # submit also grants read
    for _ in range(2):
        assert client.get("/v1/batches", headers=submitter.headers).status_code == 200
    _limited(client.get("/v1/batches", headers=submitter.headers))
    # Reads are used up; submitting has its own, larger budget.
    batch = {"name": "b", "rows": [{"prompt": "p"}]}
    for _ in range(4):
        response = client.post("/v1/batches", json=batch, headers=submitter.headers)
        assert response.status_code == 201, response.text
    body = _limited(client.post("/v1/batches", json=batch, headers=submitter.headers))
    assert "submit" in body["detail"] and "4 per 1 minute" in body["detail"]


def test_scopes_with_equal_limits_still_count_separately(
    make_client: Callable[..., TestClient], issue: Any
) -> None:
    client = make_client(rate_limits={"admin": "2/minute", "read": "2/minute"})
    admin = issue("alpha", ("admin",))
    for _ in range(2):
        assert client.get("/v1/keys", headers=admin.headers).status_code == 200
    _limited(client.get("/v1/keys", headers=admin.headers))
    for _ in range(2):
        assert client.get("/v1/jobs", headers=admin.headers).status_code == 200
    _limited(client.get("/v1/jobs", headers=admin.headers))


def test_the_window_frees_up_after_retry_after(
    make_client: Callable[..., TestClient], issue: Any
) -> None:
    client = make_client(rate_limits={"read": "1/second"})
    reader = issue("alpha", ("read",))
    assert client.get("/v1/jobs", headers=reader.headers).status_code == 200
    response = client.get("/v1/jobs", headers=reader.headers)
    _limited(response)
    assert response.headers["Retry-After"] == "1"
    time.sleep(1.1)
    assert client.get("/v1/jobs", headers=reader.headers).status_code == 200


def test_every_v1_route_consumes_exactly_one_request_of_one_scope(
    make_client: Callable[..., TestClient], issue: Any
) -> None:
    client = make_client(rate_limits=dict.fromkeys(keys.SCOPES, "2/hour"))
    routes = [
        (method.upper(), re.sub(r"\{[^}]+\}", "0123456789abcdef", path))
        for path, operations in client.app.openapi()["paths"].items()
        if path.startswith("/v1")
        for method in sorted(operations)
    ]
    assert len(routes) >= 17
    for method, path in routes:
        headers = issue("alpha", ("admin",)).headers  # a fresh key: fresh buckets
        for _ in range(2):
            response = client.request(method, path, headers=headers)
            assert response.status_code != 429, (method, path, response.text)
        _limited(client.request(method, path, headers=headers))


def test_forwarded_for_does_not_change_the_key_bucket(
    make_client: Callable[..., TestClient], issue: Any
) -> None:
    client = make_client(rate_limits={"read": "2/minute"})
    reader = issue("alpha", ("read",))
    for i in range(2):
        headers = {**reader.headers, "X-Forwarded-For": f"203.0.113.{i}"}
        assert client.get("/v1/jobs", headers=headers).status_code == 200
    headers = {**reader.headers, "X-Forwarded-For": "198.51.100.7", "X-Real-IP": "198.51.100.7"}
    _limited(client.get("/v1/jobs", headers=headers))
    # Nor does the address: the limit belongs to the key.
    _limited(_from(client, "192.0.2.50").get("/v1/jobs", headers=reader.headers))


# --------------------------------------------------------------------------- failed keys


def test_a_flood_of_bad_keys_blocks_the_address_before_any_lookup(
    make_client: Callable[..., TestClient], issue: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = make_client(auth_failure_limit="3/minute")
    good = issue("alpha", ("read",))
    lookups: list[str] = []
    real_lookup = auth._lookup

    def counting_lookup(session: Any, key: str, pepper: str) -> Any:
        lookups.append(key)
        return real_lookup(session, key, pepper)

    monkeypatch.setattr(auth, "_lookup", counting_lookup)
    for _ in range(3):
        assert client.get("/v1/jobs", headers={"X-API-Key": BAD_KEY}).status_code == 401
    assert len(lookups) == 3
    wrong = client.get("/v1/jobs", headers={"X-API-Key": BAD_KEY})
    right = client.get("/v1/jobs", headers=good.headers)
    # While blocked, a correct key and a wrong one get the same answer, and neither is
    # looked up: the limit bounds how fast keys can be tried.
    assert _limited(wrong) == _limited(right)
    assert "failed authentications" in wrong.json()["detail"]
    assert len(lookups) == 3
    # Other addresses are not blocked.
    elsewhere = _from(client, "192.0.2.10")
    assert elsewhere.get("/v1/jobs", headers=good.headers).status_code == 200
    assert elsewhere.get("/v1/jobs", headers={"X-API-Key": BAD_KEY}).status_code == 401


def test_requests_without_a_key_are_not_counted_as_failures(
    make_client: Callable[..., TestClient], issue: Any
) -> None:
    client = make_client(auth_failure_limit="2/minute")
    good = issue("alpha", ("read",))
    for _ in range(5):
        assert client.get("/v1/jobs").status_code == 401
    assert client.get("/v1/jobs", headers=good.headers).status_code == 200
    for _ in range(2):
        assert client.get("/v1/jobs", headers={"X-API-Key": BAD_KEY}).status_code == 401
    _limited(client.get("/v1/jobs", headers=good.headers))
    _limited(client.get("/v1/jobs"))  # blocked means blocked, key or no key


def test_revoked_and_expired_keys_count_as_failures(
    make_client: Callable[..., TestClient], issue: Any
) -> None:
    client = make_client(auth_failure_limit="2/minute")
    admin = issue("alpha", ("admin",))
    victim = issue("alpha", ("read",))
    assert client.post(f"/v1/keys/{victim.id}/revoke", headers=admin.headers).status_code == 200
    for _ in range(2):
        assert client.get("/v1/jobs", headers=victim.headers).status_code == 401
    _limited(client.get("/v1/jobs", headers=admin.headers))


def test_forwarded_for_does_not_escape_the_failure_limit(
    make_client: Callable[..., TestClient],
) -> None:
    client = make_client(auth_failure_limit="3/minute")
    for i in range(3):
        headers = {"X-API-Key": BAD_KEY, "X-Forwarded-For": f"203.0.113.{i}"}
        assert client.get("/v1/jobs", headers=headers).status_code == 401
    headers = {"X-API-Key": BAD_KEY, "X-Forwarded-For": "198.51.100.1", "Forwarded": "for=1.2.3.4"}
    _limited(client.get("/v1/jobs", headers=headers))


# --------------------------------------------------------------------------- storage


def test_the_embedded_default_counts_in_memory(
    make_client: Callable[..., TestClient], issue: Any
) -> None:
    client = make_client(rate_limits={"read": "1/minute"})
    limiter = client.app.state.rate_limiter
    assert isinstance(limiter.storage, MemoryStorage)
    assert limiter.uri == "memory://"
    reader = issue("alpha", ("read",))
    assert client.get("/v1/jobs", headers=reader.headers).status_code == 200
    _limited(client.get("/v1/jobs", headers=reader.headers))
    # Memory is per process (per app): another app starts from zero.
    other = make_client(rate_limits={"read": "1/minute"})
    assert other.get("/v1/jobs", headers=reader.headers).status_code == 200


def test_redis_broker_means_redis_counters_shared_by_every_gateway(
    make_client: Callable[..., TestClient], issue: Any, redis_db: redis.Redis
) -> None:
    client = make_client(broker_url=REDIS_URL, rate_limits={"read": "2/minute"})
    limiter = client.app.state.rate_limiter
    assert isinstance(limiter.storage, RedisStorage)
    assert limiter.uri == REDIS_URL
    reader = issue("alpha", ("read",))
    address = f"test-{secrets.token_hex(6)}"  # counters in Redis outlive the test
    mine = _from(client, address)
    try:
        for _ in range(2):
            assert mine.get("/v1/jobs", headers=reader.headers).status_code == 200
        _limited(mine.get("/v1/jobs", headers=reader.headers))
        stored = _rl_keys(redis_db, reader.id)
        assert stored and all(k.startswith(b"charter:rl:") for k in stored), stored
        # A second gateway process over the same Redis sees the same counters.
        other = make_client(broker_url=REDIS_URL, rate_limits={"read": "2/minute"})
        _limited(other.get("/v1/jobs", headers=reader.headers))
        # Failed keys are counted there too, by address.
        assert mine.get("/v1/jobs", headers={"X-API-Key": BAD_KEY}).status_code == 401
        assert _rl_keys(redis_db, address)
    finally:
        for key in _rl_keys(redis_db, reader.id) + _rl_keys(redis_db, address):
            redis_db.delete(key)


def test_an_explicit_storage_wins_over_the_broker(make_settings: Callable[..., Any]) -> None:
    settings = make_settings(broker_url=DEAD_REDIS, rate_limit_storage="memory://")
    assert isinstance(RateLimiter(settings).storage, MemoryStorage)
    settings = make_settings(broker_url="amqp://guest@127.0.0.1//")
    assert ratelimit.storage_uri(settings) == "memory://"
    settings = make_settings(broker_url="rediss://cache.internal:6380/2")
    assert ratelimit.storage_uri(settings) == "rediss://cache.internal:6380/2"


def test_unreachable_redis_fails_open_and_warns_once_a_minute(
    make_client: Callable[..., TestClient],
    issue: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ratelimit, "_OUTAGE_BACKOFF_S", 0.0)  # try the store every time
    client = make_client(
        broker_url=DEAD_REDIS, rate_limits={"read": "1/minute"}, auth_failure_limit="1/minute"
    )
    assert isinstance(client.app.state.rate_limiter.storage, RedisStorage)
    reader = issue("alpha", ("read",))
    with caplog.at_level(logging.WARNING, logger=ratelimit.__name__):
        for _ in range(3):
            assert client.get("/v1/jobs", headers=reader.headers).status_code == 200
        for _ in range(3):
            assert client.get("/v1/jobs", headers={"X-API-Key": BAD_KEY}).status_code == 401
    warnings = [r for r in caplog.records if r.name == ratelimit.__name__]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "unreachable" in warnings[0].getMessage()


# --------------------------------------------------------------------------- settings


def test_a_partial_setting_keeps_the_other_defaults(make_settings: Callable[..., Any]) -> None:
    limiter = RateLimiter(make_settings(rate_limits={"read": "", "submit": "5/second"}))
    assert limiter.scope_limits["read"] == []  # '' disables
    assert limiter.scope_limits["submit"] == list(parse_many("5/second"))
    assert limiter.scope_limits["admin"] == list(parse_many("120/minute"))
    assert limiter.auth_limits == list(parse_many("30/minute"))


def test_bad_limit_settings_are_refused_at_startup(make_settings: Callable[..., Any]) -> None:
    with pytest.raises(ValueError, match="unknown scopes"):
        RateLimiter(make_settings(rate_limits={"reads": "5/minute"}))
    with pytest.raises(ValueError, match=r"rate_limits\[read\]"):
        RateLimiter(make_settings(rate_limits={"read": "lots"}))
    with pytest.raises(ValueError, match="auth_failure_limit"):
        RateLimiter(make_settings(auth_failure_limit="30 a minute please"))
