"""Dashboard login, sessions, CSRF and headers, over HTTP (no browser needed)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine, select, update

from charter.core.jobs import JobStatus
from charter.db.models import ApiKey, DashboardSession, Job, utcnow
from charter.db.session import session_factory
from charter.settings import Settings
from tests.conftest import Api, IssuedKey

ORIGIN = {"Origin": "http://testserver"}


def login(client: TestClient, key: str, **form: str) -> Any:
    return client.post(
        "/dashboard/login", data={"api_key": key, **form}, headers=ORIGIN, follow_redirects=False
    )


def sessions(engine: Engine) -> list[DashboardSession]:
    with session_factory(engine)() as s:
        return list(s.scalars(select(DashboardSession)))


def csrf_of(client: TestClient) -> str:
    page = client.get("/dashboard/")
    assert page.status_code == 200, page.text
    marker = 'name="csrf" value="'
    start = page.text.index(marker) + len(marker)
    return page.text[start : page.text.index('"', start)]


def test_login_sets_a_strict_httponly_cookie_and_stores_only_its_hash(
    client: TestClient, issue: Callable[..., IssuedKey], engine: Engine
) -> None:
    key = issue("alpha", ("read",))
    response = login(client, key.key, next="/dashboard/jobs")
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/jobs"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("charter_session=")
    for attribute in ("HttpOnly", "Path=/dashboard", "SameSite=strict", "Max-Age=28800"):
        assert attribute in cookie, cookie
    assert "Secure" not in cookie  # plain HTTP here; see the HTTPS test
    token = client.cookies["charter_session"]
    [row] = sessions(engine)
    assert row.id == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (row.id, row.csrf_token, row.api_key_id)
    assert row.api_key_id == key.id and row.project_id == key.project_id
    assert row.expires_at - row.created_at == timedelta(hours=8)
    assert client.get("/dashboard/jobs").status_code == 200


def test_the_cookie_is_secure_over_https_and_lasts_the_configured_hours(
    make_client: Callable[..., TestClient], issue: Callable[..., IssuedKey]
) -> None:
    client = make_client(dashboard_session_hours=2)
    client.base_url = client.base_url.copy_with(scheme="https")
    key = issue("alpha", ("read",))
    response = client.post(
        "/dashboard/login",
        data={"api_key": key.key},
        headers={"Origin": "https://testserver"},
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert "Secure" in response.headers["set-cookie"]
    assert "Max-Age=7200" in response.headers["set-cookie"]


def test_the_session_hours_are_bounded() -> None:
    for hours in (0, -1, 169):
        with pytest.raises(ValidationError, match="dashboard_session_hours"):
            Settings(_env_file=None, dashboard_session_hours=hours)  # type: ignore[call-arg]


def test_bad_revoked_and_expired_keys_are_refused(
    client: TestClient, issue: Callable[..., IssuedKey], engine: Engine
) -> None:
    response = login(client, "ck_not-a-key")
    assert response.status_code == 401 and "invalid API key" in response.text
    revoked = issue("alpha", ("read",))
    with session_factory(engine)() as s, s.begin():
        s.execute(update(ApiKey).where(ApiKey.id == revoked.id).values(revoked_at=utcnow()))
    response = login(client, revoked.key)
    assert response.status_code == 401 and "revoked" in response.text
    expired = issue("alpha", ("read",), expires_at=utcnow() - timedelta(seconds=1))
    response = login(client, expired.key)
    assert response.status_code == 401 and "expired" in response.text
    assert sessions(engine) == [] and "charter_session" not in client.cookies


def test_failed_logins_count_against_the_address(
    make_client: Callable[..., TestClient], issue: Callable[..., IssuedKey]
) -> None:
    client = make_client(auth_failure_limit="2/minute")
    assert [login(client, "ck_wrong").status_code for _ in range(3)] == [401, 401, 429]
    assert login(client, issue("alpha", ("read",)).key).status_code == 429  # even a good key


def test_pages_need_a_session(client: TestClient) -> None:
    response = client.get("/dashboard/jobs?type=compare", follow_redirects=False)
    assert response.status_code == 303
    assert (
        response.headers["location"] == "/dashboard/login?next=%2Fdashboard%2Fjobs%3Ftype%3Dcompare"
    )
    assert client.get("/dashboard/?fragment=1").status_code == 401  # the poller's answer
    client.cookies.set("charter_session", "forged", path="/dashboard")
    assert client.get("/dashboard/", follow_redirects=False).status_code == 303


def test_login_goes_only_to_dashboard_pages(
    client: TestClient, issue: Callable[..., IssuedKey]
) -> None:
    key = issue("alpha", ("read",))
    for target in (
        "//evil.example/",
        "https://evil.example/dashboard/",
        "/v1/jobs",
        "/dashboard\\x",
    ):
        response = login(client, key.key, next=target)
        assert response.headers["location"] == "/dashboard/", target


def test_revoking_the_key_or_expiry_ends_the_session(
    client: TestClient, issue: Callable[..., IssuedKey], engine: Engine
) -> None:
    admin = issue("alpha", ("admin",))
    key = issue("alpha", ("read",))
    login(client, key.key)
    assert client.get("/dashboard/").status_code == 200
    revoked = client.post(f"/v1/keys/{key.id}/revoke", headers=admin.headers)
    assert revoked.status_code == 200, revoked.text
    assert client.get("/dashboard/", follow_redirects=False).status_code == 303

    login(client, admin.key)
    assert client.get("/dashboard/").status_code == 200
    with session_factory(engine)() as s, s.begin():
        s.execute(update(DashboardSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert client.get("/dashboard/", follow_redirects=False).status_code == 303
    assert client.get("/dashboard/?fragment=1").status_code == 401
    login(client, admin.key)  # a new login clears the expired sessions
    assert len(sessions(engine)) == 1


def test_logout_needs_the_token_and_the_origin_and_deletes_the_session(
    client: TestClient, issue: Callable[..., IssuedKey], engine: Engine
) -> None:
    login(client, issue("alpha", ("read",)).key)
    csrf = csrf_of(client)
    for data, headers in (
        ({}, ORIGIN),
        ({"csrf": "wrong"}, ORIGIN),
        ({"csrf": csrf}, {"Origin": "http://evil.example"}),
        ({"csrf": csrf}, {}),  # no Origin and no Referer
        ({"csrf": csrf}, {"Referer": "http://evil.example/dashboard/"}),
    ):
        response = client.post("/dashboard/logout", data=data, headers=headers)
        assert response.status_code == 403, (data, headers)
        assert "CSRF" in response.text or "cross-origin" in response.text
    assert len(sessions(engine)) == 1
    response = client.post(
        "/dashboard/logout",
        data={"csrf": csrf},
        headers={"Referer": "http://testserver/dashboard/"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"
    assert sessions(engine) == []
    assert client.get("/dashboard/", follow_redirects=False).status_code == 303


def test_login_from_another_origin_is_refused(
    client: TestClient, issue: Callable[..., IssuedKey], engine: Engine
) -> None:
    response = client.post(
        "/dashboard/login",
        data={"api_key": issue("alpha", ("read",)).key},
        headers={"Origin": "http://evil.example"},
    )
    assert response.status_code == 403 and sessions(engine) == []


def test_cancel_checks_csrf_scope_and_project(
    client: TestClient,
    api: Api,
    issue: Callable[..., IssuedKey],
    engine: Engine,
    example_rows: list[dict[str, Any]],
) -> None:
    admin = issue("alpha", ("admin",))
    api.push_default(admin.headers)
    batch = api.create_batch(admin.headers, example_rows[:3])
    job = api.submit(admin.headers, batch_id=batch["id"], model="m")
    url = f"/dashboard/jobs/{job['id']}/cancel"

    def status() -> str:
        with session_factory(engine)() as s:
            return s.get_one(Job, job["id"]).status

    login(client, issue("beta", ("admin",)).key)  # another project: its job is not there
    response = client.post(url, data={"csrf": csrf_of(client)}, headers=ORIGIN)
    assert response.status_code == 404 and status() != JobStatus.CANCELLED

    login(client, issue("alpha", ("read",)).key)
    response = client.post(url, data={"csrf": csrf_of(client)}, headers=ORIGIN)
    assert response.status_code == 403 and "lacks the &#39;submit&#39; scope" in response.text

    login(client, admin.key)
    csrf = csrf_of(client)
    assert client.post(url, data={"csrf": "x"}, headers=ORIGIN).status_code == 403
    assert client.post(url, data={"csrf": csrf}, headers={"Origin": "null"}).status_code == 403
    response = client.post(url, data={"csrf": csrf}, headers={**ORIGIN, "Idempotency-Key": "k"})
    assert response.status_code == 422 and "Idempotency-Key" in response.text
    assert status() != JobStatus.CANCELLED
    response = client.post(url, data={"csrf": csrf}, headers=ORIGIN, follow_redirects=False)
    assert (
        response.status_code == 303
        and response.headers["location"] == f"/dashboard/jobs/{job['id']}"
    )
    assert status() == JobStatus.CANCELLED
    assert (
        client.get(f"/v1/jobs/{job['id']}", headers=admin.headers).json()["status"] == "cancelled"
    )


def test_security_and_cache_headers(client: TestClient, issue: Callable[..., IssuedKey]) -> None:
    login(client, issue("alpha", ("read",)).key)
    for path in ("/dashboard/", "/dashboard/login", "/dashboard/jobs/nope"):
        response = client.get(path)
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["cache-control"] == "no-store"
    page = client.get("/dashboard/").text
    assert "<script>" not in page and " style=" not in page  # nothing inline for the CSP
    for asset in ("dashboard.css", "dashboard.js"):
        start = page.index(f"/dashboard/static/{asset}?v=")
        url = page[start : page.index('"', start)]
        response = client.get(url)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "public, max-age=86400"
        assert "default-src 'self'" in response.headers["content-security-policy"]
    assert client.get("/dashboard/static/missing.js").status_code == 404


def test_bad_query_values_are_4xx_pages(
    client: TestClient, issue: Callable[..., IssuedKey]
) -> None:
    login(client, issue("alpha", ("read",)).key)
    response = client.get("/dashboard/jobs?type=nope")
    assert response.status_code == 422 and "type must be one of" in response.text
    assert client.get("/dashboard/jobs?cursor=%%%").status_code == 422
    response = client.get("/dashboard/?hours=0")
    assert response.status_code == 422 and "query.hours" in response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "frame-ancestors" in response.headers["content-security-policy"]
    assert client.get("/dashboard/constitutions/nope").status_code == 404


def test_the_dashboard_is_not_in_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert paths and not [p for p in paths if p.startswith("/dashboard")]
