"""After any error the connection stays usable; an unexpected error says it closes."""

from __future__ import annotations

import http.client
import json
from typing import Any

from fastapi import FastAPI


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def test_bad_input_keeps_the_connection(live_server: Any, admin_headers: dict[str, str]) -> None:
    conn = http.client.HTTPConnection(live_server.host, live_server.port, timeout=30)
    headers = {**admin_headers, "Content-Type": "application/json"}
    bad_bodies = [
        b'{"type": "sft", "dataset": "d", "base_model": "smollm2", "config": {"x": "\\ud800"}}',
        b'{"name": "n", "rows": [{"prompt": "x"}], "rows": []}',
        b'{"name": ' + b"9" * 5000 + b', "rows": [{"prompt": "x"}]}',
        b"[" * 100_000,
        b'{"name": "n", "rows": [{"prompt": NaN}]}',
    ]
    for body in bad_bodies:
        path = "/v1/runs" if b"dataset" in body else "/v1/batches"
        status, response_headers, payload = _request(conn, "POST", path, headers, body)
        assert 400 <= status < 500, (status, payload[:200])
        assert response_headers.get("connection", "").lower() != "close"
        assert {"error", "detail", "field"} <= set(json.loads(payload))
        assert conn.sock is not None  # the same socket is reused for the next request
    status, _, payload = _request(
        conn, "POST", "/v1/batches", headers, b'{"rows": [{"prompt": "fine"}]}'
    )
    assert status == 201, payload
    conn.close()


def test_an_unexpected_error_is_500_with_connection_close(
    app: FastAPI, live_server: Any, admin_headers: dict[str, str]
) -> None:
    @app.get("/v1/_boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("a bug")

    conn = http.client.HTTPConnection(live_server.host, live_server.port, timeout=30)
    status, headers, payload = _request(conn, "GET", "/v1/_boom", admin_headers, b"")
    assert status == 500
    assert headers.get("connection", "").lower() == "close"
    assert json.loads(payload) == {
        "error": "internal",
        "detail": "internal server error; it has been logged",
    }
    assert "a bug" not in payload.decode()
    conn.close()
