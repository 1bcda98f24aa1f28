"""The /v1/webhooks API: endpoints, their secret, the delivery log and resend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from charter.core.webhook_signing import secret_key
from charter.webhook_events import EVENT_TYPES


def _create(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    body.setdefault("url", "https://example.invalid/hook")
    body.setdefault("events", ["job.completed"])
    return client.post("/v1/webhooks", json=body, headers=headers)


def test_create_shows_the_secret_once(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = _create(client, admin_headers, events=list(EVENT_TYPES), description="ops")
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["secret"].startswith("whsec_") and len(secret_key(created["secret"])) >= 24
    assert created["events"] == sorted(EVENT_TYPES)
    assert (created["enabled"], created["description"]) == (True, "ops")
    shown = client.get(f"/v1/webhooks/{created['id']}", headers=admin_headers)
    assert shown.status_code == 200
    assert "secret" not in shown.json() and created["secret"] not in shown.text
    listed = client.get("/v1/webhooks", headers=admin_headers)
    assert [e["id"] for e in listed.json()["items"]] == [created["id"]]
    assert created["secret"] not in listed.text


def test_a_retry_with_the_same_idempotency_key_never_shows_the_secret_again(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    headers = admin_headers | {"Idempotency-Key": "hook-1"}
    first = _create(client, headers)
    assert first.status_code == 201
    again = _create(client, headers)
    assert again.status_code == 409
    assert first.json()["secret"] not in again.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/hook"}, "url"),
        ({"url": "/relative/hook"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "http://user:pw@example.com/"}, "url"),
        ({"url": "https://"}, "url"),
        ({"events": ["job.exploded"]}, "events"),
        ({"events": []}, "events"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(
    client: TestClient, admin_headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    response = _create(client, admin_headers, **body)
    assert response.status_code == 422, response.text
    assert response.json()["field"].split(".")[:2] == ["body", field], response.json()


def test_update_validates_and_changes_what_it_names(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    hook = _create(client, admin_headers).json()
    url = f"/v1/webhooks/{hook['id']}"
    bad = client.patch(url, json={"url": "gopher://x"}, headers=admin_headers)
    assert (bad.status_code, bad.json()["field"]) == (422, "body.url")
    bad = client.patch(url, json={"events": ["nope"]}, headers=admin_headers)
    assert bad.status_code == 422 and bad.json()["field"].startswith("body.events")
    body = {"url": "http://127.0.0.1:1/new", "events": ["job.failed"], "enabled": False}
    changed = client.patch(url, json=body, headers=admin_headers).json()
    assert (changed["url"], changed["events"], changed["enabled"]) == (
        "http://127.0.0.1:1/new",
        ["job.failed"],
        False,
    )
    assert changed["disabled_reason"] and changed["description"] == ""
    assert (
        client.patch(url, json={"enabled": True}, headers=admin_headers).json()["disabled_reason"]
        is None
    )


def test_rotate_returns_a_new_secret_and_delete_removes(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    hook = _create(client, admin_headers).json()
    rotated = client.post(f"/v1/webhooks/{hook['id']}/rotate-secret", headers=admin_headers)
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != hook["secret"]
    assert client.delete(f"/v1/webhooks/{hook['id']}", headers=admin_headers).status_code == 204
    gone = client.get(f"/v1/webhooks/{hook['id']}", headers=admin_headers)
    assert (gone.status_code, gone.json()["field"]) == (404, "webhook_id")


def test_lists_are_cursor_paged(client: TestClient, admin_headers: dict[str, str]) -> None:
    ids = {_create(client, admin_headers).json()["id"] for _ in range(3)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/webhooks", params=params, headers=admin_headers).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 3
    bad = client.get("/v1/webhooks", params={"cursor": "garbage!"}, headers=admin_headers)
    assert (bad.status_code, bad.json()["field"]) == (422, "cursor")


def test_the_delivery_log_filters_by_status(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    hook = _create(client, admin_headers).json()
    ping = client.post(f"/v1/webhooks/{hook['id']}/test", headers=admin_headers)
    assert ping.status_code == 202
    assert ping.json()["event_type"] == "webhook.test"
    assert ping.json()["msg_id"].startswith("msg_")
    log = f"/v1/webhooks/{hook['id']}/deliveries"
    pending = client.get(log, params={"status": "pending"}, headers=admin_headers).json()
    assert [d["id"] for d in pending["items"]] == [ping.json()["id"]]
    assert pending["items"][0]["attempts"] == 0
    done = client.get(log, params={"status": "delivered"}, headers=admin_headers).json()
    assert done["items"] == []
    bad = client.get(log, params={"status": "lost"}, headers=admin_headers)
    assert (bad.status_code, bad.json()["field"]) == (422, "query.status")
    missing = client.post("/v1/webhooks/deliveries/nope/resend", headers=admin_headers)
    assert (missing.status_code, missing.json()["field"]) == (404, "delivery_id")


@pytest.mark.parametrize("scope", ["read", "submit", "train"])
def test_only_admin_keys_manage_webhooks(
    client: TestClient,
    admin_headers: dict[str, str],
    make_headers: Callable[..., dict[str, str]],
    scope: str,
) -> None:
    hook = _create(client, admin_headers).json()
    headers = make_headers("alpha", scope)
    for method, path in [
        ("POST", "/v1/webhooks"),
        ("GET", "/v1/webhooks"),
        ("GET", f"/v1/webhooks/{hook['id']}"),
        ("PATCH", f"/v1/webhooks/{hook['id']}"),
        ("DELETE", f"/v1/webhooks/{hook['id']}"),
        ("POST", f"/v1/webhooks/{hook['id']}/rotate-secret"),
        ("GET", f"/v1/webhooks/{hook['id']}/deliveries"),
        ("POST", f"/v1/webhooks/{hook['id']}/test"),
        ("POST", "/v1/webhooks/deliveries/x/resend"),
    ]:
        body = {"url": "https://example.invalid/", "events": ["job.failed"]}
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"] == "forbidden"


def test_another_projects_endpoints_are_not_found(
    client: TestClient, admin_headers: dict[str, str], make_headers: Callable[..., dict[str, str]]
) -> None:
    hook = _create(client, admin_headers).json()
    other = make_headers("beta", "admin")
    assert client.get(f"/v1/webhooks/{hook['id']}", headers=other).status_code == 404
    assert client.get("/v1/webhooks", headers=other).json()["items"] == []
    ping = client.post(f"/v1/webhooks/{hook['id']}/test", headers=admin_headers).json()
    resend = client.post(f"/v1/webhooks/deliveries/{ping['id']}/resend", headers=other)
    assert resend.status_code == 404
