"""``/v1/batches``: JSON create, JSONL upload (bulk COPY on PostgreSQL), pagination."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from charter.db.models import Prompt, PromptBatch
from charter.db.session import session_factory
from services.gateway.pagination import encode_cursor

NDJSON = {"Content-Type": "application/x-ndjson"}

MIXED_ROWS: list[dict[str, Any]] = [
    {"prompt": "How do I bake bread?"},
    {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Tell me a joke."},
        ]
    },
    {"prompt": "Explain tides.", "response": "The moon pulls the oceans."},
    {"prompt": "Pick one.", "response_a": "Option A.", "response_b": "Option B."},
    {
        "messages": [{"role": "user", "content": 'Tabs\tnewlines\nbackslash\\ quotes" é 🙂'}],
        "response": "Line one\nLine two\t\\N",
    },
]


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def _stored(row: dict[str, Any]) -> dict[str, Any]:
    """A row as the prompts endpoint returns it (absent fields are null)."""
    fields = ("prompt", "messages", "response", "response_a", "response_b")
    return {f: row.get(f) for f in fields}


def _walk(client: TestClient, url: str, headers: dict[str, str], limit: int) -> list[list[Any]]:
    pages: list[list[Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = client.get(url, params=params, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 1000, "pagination does not terminate"


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert {"error", "detail"} <= set(body)
    return body


def test_create_batch_from_json(
    client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    response = client.post(
        "/v1/batches", json={"name": "mixed", "rows": MIXED_ROWS}, headers=admin_headers
    )
    assert response.status_code == 201, response.text
    batch = response.json()
    assert batch["name"] == "mixed"
    assert batch["row_count"] == len(MIXED_ROWS)

    got = client.get(f"/v1/batches/{batch['id']}", headers=admin_headers)
    assert got.status_code == 200
    assert got.json() == batch

    prompts = client.get(f"/v1/batches/{batch['id']}/prompts", headers=admin_headers).json()
    assert prompts["next_cursor"] is None
    assert [p["position"] for p in prompts["items"]] == list(range(len(MIXED_ROWS)))
    assert [
        {k: v for k, v in p.items() if k not in ("id", "position")} for p in prompts["items"]
    ] == [_stored(r) for r in MIXED_ROWS]

    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(Prompt)) == len(MIXED_ROWS)


def test_upload_jsonl_with_every_row_shape(
    client: TestClient, admin_headers: dict[str, str], example_rows: list[dict[str, Any]]
) -> None:
    rows = MIXED_ROWS + example_rows
    body = b"\n" + _jsonl(rows[:3]) + b"\n   \n" + _jsonl(rows[3:])  # blank lines are skipped
    response = client.post(
        "/v1/batches/upload",
        params={"name": "uploaded"},
        content=body,
        headers={**admin_headers, **NDJSON},
    )
    assert response.status_code == 201, response.text
    batch = response.json()
    assert (batch["name"], batch["row_count"]) == ("uploaded", len(rows))

    items = [
        p
        for page in _walk(client, f"/v1/batches/{batch['id']}/prompts", admin_headers, 1000)
        for p in page
    ]
    assert [p["position"] for p in items] == list(range(len(rows)))
    assert [{k: v for k, v in p.items() if k not in ("id", "position")} for p in items] == [
        _stored(r) for r in rows
    ]


BAD_LINES = {
    "not-json": ("{not json", "line 3"),
    "prompt-and-messages": (
        json.dumps({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}),
        "line 3",
    ),
    "half-pair": (json.dumps({"prompt": "x", "response_a": "only a"}), "line 3"),
    "ends-with-assistant": (
        json.dumps({"messages": [{"role": "assistant", "content": "y"}]}),
        "line 3",
    ),
    "bad-role": (
        json.dumps({"messages": [{"role": "robot", "content": "y"}]}),
        "line 3: messages.0.role",
    ),
    "unknown-field": (json.dumps({"prompt": "x", "colour": "blue"}), "line 3: colour"),
    "empty-prompt": (json.dumps({"prompt": ""}), "line 3: prompt"),
    "wrong-type": (json.dumps({"prompt": 5}), "line 3: prompt"),
    "array": (json.dumps(["prompt", "x"]), "line 3"),
    "empty-object": (json.dumps({}), "line 3"),
}


def test_upload_bad_line_names_line_number(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    head = _jsonl([{"prompt": "ok"}, {"prompt": "fine"}])
    tail = _jsonl([{"prompt": "never reached"}])
    for case, (bad_line, expect) in BAD_LINES.items():
        response = client.post(
            "/v1/batches/upload?name=bad",
            content=head + bad_line.encode() + b"\n" + tail,
            headers={**admin_headers, **NDJSON},
        )
        error = _error(response, 422)
        assert error["detail"].startswith(expect), (case, error)
        assert error["field"] == "line 3", case
    # Blank lines still count: the bad row on line 5 is reported as line 5.
    response = client.post(
        "/v1/batches/upload",
        content=head + b"\n  \n" + b"{oops}\n",
        headers={**admin_headers, **NDJSON},
    )
    assert _error(response, 422)["field"] == "line 5"
    assert client.get("/v1/batches", headers=admin_headers).json()["items"] == []


def test_empty_upload_is_422(client: TestClient, admin_headers: dict[str, str]) -> None:
    for body in (b"", b"\n\n  \n"):
        response = client.post(
            "/v1/batches/upload?name=empty", content=body, headers={**admin_headers, **NDJSON}
        )
        assert _error(response, 422)["field"] == "body"


def test_upload_over_max_batch_rows_is_422(make_client: Any, admin_headers: dict[str, str]) -> None:
    client = make_client(max_batch_rows=5)
    response = client.post(
        "/v1/batches/upload",
        content=_jsonl([{"prompt": f"p{i}"} for i in range(6)]),
        headers={**admin_headers, **NDJSON},
    )
    assert "5 rows" in _error(response, 422)["detail"]
    ok = client.post(
        "/v1/batches/upload",
        content=_jsonl([{"prompt": f"p{i}"} for i in range(5)]),
        headers={**admin_headers, **NDJSON},
    )
    assert ok.status_code == 201, ok.text


def test_upload_name_too_long_is_422(client: TestClient, admin_headers: dict[str, str]) -> None:
    response = client.post(
        "/v1/batches/upload",
        params={"name": "n" * 129},
        content=_jsonl([{"prompt": "x"}]),
        headers={**admin_headers, **NDJSON},
    )
    assert _error(response, 422)["field"] == "query.name"


INVALID_CREATES = {
    "no-rows": {"name": "x", "rows": []},
    "missing-rows": {"name": "x"},
    "extra": {"name": "x", "rows": [{"prompt": "a"}], "extra": 1},
    "both": {"rows": [{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}]},
    "neither": {"rows": [{"response": "no prompt"}]},
    "rows-string": {"rows": "not a list"},
    "row-extra": {"rows": [{"prompt": "a", "score": 1}]},
    "long-name": {"name": "x" * 129, "rows": [{"prompt": "a"}]},
    "long-prompt": {"rows": [{"prompt": "a" * 32_001}]},
    "too-many-rows": {"rows": [{"prompt": "a"}] * 10_001},
}


def test_create_batch_invalid_is_422(client: TestClient, admin_headers: dict[str, str]) -> None:
    for case, body in INVALID_CREATES.items():
        response = client.post("/v1/batches", json=body, headers=admin_headers)
        assert response.status_code == 422, (case, response.text)
        assert response.json()["field"].startswith("body"), case
    assert client.get("/v1/batches", headers=admin_headers).json()["items"] == []


def test_text_the_database_cannot_store_is_422_not_500(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    """PostgreSQL text and JSONB cannot hold NUL, so no backend takes it (a dataset
    must move between SQLite and PostgreSQL unchanged): a 422 naming the field."""
    rows = (
        ({"prompt": "a\x00b"}, "rows.0.prompt"),
        ({"prompt": "x", "response": "a\x00b"}, "rows.0.response"),
        ({"messages": [{"role": "user", "content": "a\x00b"}]}, "rows.0.messages.0.content"),
    )
    for row, where in rows:
        response = client.post("/v1/batches", json={"rows": [row]}, headers=admin_headers)
        assert response.status_code == 422, response.text
        assert response.json()["field"] == f"body.{where}"
        response = client.post(
            "/v1/batches/upload", content=_jsonl([row]), headers={**admin_headers, **NDJSON}
        )
        assert response.status_code == 422, response.text
        assert response.json()["field"].startswith("line 1")
    response = client.post(
        "/v1/batches", json={"name": "n\x00", "rows": [{"prompt": "x"}]}, headers=admin_headers
    )
    assert response.status_code == 422 and response.json()["field"] == "body.name"
    assert client.get("/v1/batches", headers=admin_headers).json()["items"] == []


def test_prompts_pagination_walks_every_row_once(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    n = 23
    batch = client.post(
        "/v1/batches/upload",
        content=_jsonl([{"prompt": f"prompt {i}"} for i in range(n)]),
        headers={**admin_headers, **NDJSON},
    ).json()
    url = f"/v1/batches/{batch['id']}/prompts"
    for limit in (1, 5, 23, 100):
        pages = _walk(client, url, admin_headers, limit)
        assert len(pages) == -(-n // limit)
        assert all(len(page) == limit for page in pages[:-1])
        positions = [p["position"] for page in pages for p in page]
        assert positions == list(range(n))  # ordered, no duplicates, nothing missing
        assert [p["prompt"] for page in pages for p in page] == [f"prompt {i}" for i in range(n)]
        assert len({p["id"] for page in pages for p in page}) == n


def test_batch_list_pagination(client: TestClient, admin_headers: dict[str, str]) -> None:
    created = [
        client.post(
            "/v1/batches", json={"name": f"b{i}", "rows": [{"prompt": "x"}]}, headers=admin_headers
        ).json()["id"]
        for i in range(7)
    ]
    pages = _walk(client, "/v1/batches", admin_headers, 3)
    assert [len(p) for p in pages] == [3, 3, 1]
    seen = [b["id"] for page in pages for b in page]
    assert sorted(seen) == sorted(created)
    assert len(set(seen)) == 7
    keys = [(datetime.fromisoformat(b["created_at"]), b["id"]) for page in pages for b in page]
    assert keys == sorted(keys, reverse=True)  # newest first


def test_bad_page_parameters_are_422(client: TestClient, admin_headers: dict[str, str]) -> None:
    batch = client.post(
        "/v1/batches", json={"rows": [{"prompt": "x"}]}, headers=admin_headers
    ).json()
    queries = ("limit=0", "limit=1001", "limit=abc", "cursor=%21%21not-base64%21%21", "cursor=bm90")
    for url in ("/v1/batches", f"/v1/batches/{batch['id']}/prompts"):
        for query in queries:
            response = client.get(f"{url}?{query}", headers=admin_headers)
            assert response.status_code == 422, (url, query, response.text)


def test_cursors_of_the_wrong_shape_are_422(
    client: TestClient, admin_headers: dict[str, str]
) -> None:
    """Decodable cursors this API never issues are refused, never a 500 or a restart."""
    batch = client.post(
        "/v1/batches", json={"rows": [{"prompt": "x"}]}, headers=admin_headers
    ).json()
    cases = {
        "/v1/batches": [5, "x", ["not-a-date", "x"], ["2026-01-01T00:00:00+00:00", 5], {"a": 1}],
        f"/v1/batches/{batch['id']}/prompts": [-5, 1.5, True, "3", [3], 2**63, 10**30],
    }
    for url, values in cases.items():
        for value in values:
            response = client.get(
                url, params={"cursor": encode_cursor(value)}, headers=admin_headers
            )
            assert response.status_code == 422, (url, value, response.text)
            assert response.json()["field"] == "cursor"


def test_unknown_batch_is_404(client: TestClient, admin_headers: dict[str, str]) -> None:
    for url in ("/v1/batches/0123456789abcdef", "/v1/batches/0123456789abcdef/prompts"):
        body = _error(client.get(url, headers=admin_headers), 404)
        assert body["field"] == "batch_id"


def test_read_key_cannot_create(client: TestClient, make_headers: Any) -> None:
    reader = make_headers("alpha", "read")
    _error(client.post("/v1/batches", json={"rows": [{"prompt": "x"}]}, headers=reader), 403)
    _error(
        client.post(
            "/v1/batches/upload", content=b'{"prompt": "x"}\n', headers={**reader, **NDJSON}
        ),
        403,
    )
    assert client.get("/v1/batches", headers=reader).status_code == 200


def test_bulk_upload_of_ten_thousand_rows(
    client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    n = 10_000
    rows: list[dict[str, Any]] = []
    for i in range(n):
        if i % 3 == 0:
            rows.append({"prompt": f"prompt {i}\twith a tab"})
        elif i % 3 == 1:
            rows.append(
                {"messages": [{"role": "user", "content": f"message {i}"}], "response": f"r{i}"}
            )
        else:
            rows.append({"prompt": f"prompt {i}", "response_a": f"a{i}", "response_b": f"b{i}"})
    started = time.perf_counter()
    response = client.post(
        "/v1/batches/upload?name=bulk", content=_jsonl(rows), headers={**admin_headers, **NDJSON}
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 201, response.text
    batch = response.json()
    assert batch["row_count"] == n
    assert elapsed < 30, f"a {n}-row upload took {elapsed:.1f}s"

    with session_factory(engine)() as session:
        count, low, high, distinct = session.execute(
            select(
                func.count(),
                func.min(Prompt.position),
                func.max(Prompt.position),
                func.count(func.distinct(Prompt.position)),
            ).where(Prompt.batch_id == batch["id"])
        ).one()
        assert (count, low, high, distinct) == (n, 0, n - 1, n)
        stored = session.get_one(PromptBatch, batch["id"])
        assert stored.row_count == n
        last = session.scalar(
            select(Prompt).where(Prompt.batch_id == batch["id"], Prompt.position == n - 1)
        )
        assert last is not None
        assert _stored(
            {
                "prompt": last.prompt,
                "messages": last.messages,
                "response": last.response,
                "response_a": last.response_a,
                "response_b": last.response_b,
            }
        ) == _stored(rows[-1])
        middle = session.scalar(
            select(Prompt).where(Prompt.batch_id == batch["id"], Prompt.position == 4)
        )
        assert middle is not None and middle.messages == rows[4]["messages"]

    page = client.get(
        f"/v1/batches/{batch['id']}/prompts", params={"limit": 1000}, headers=admin_headers
    ).json()
    assert len(page["items"]) == 1000 and page["next_cursor"] is not None


@pytest.mark.postgres_only
def test_postgres_uploads_take_the_copy_path(
    client: TestClient, admin_headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter.db import bulk

    copied: list[int] = []
    real_copy = bulk._copy

    def spy(session: Any, table: Any, columns: Any, records: Any) -> int:
        records = list(records)
        copied.append(len(records))
        return real_copy(session, table, columns, iter(records))

    monkeypatch.setattr(bulk, "_copy", spy)
    response = client.post(
        "/v1/batches/upload", content=_jsonl(MIXED_ROWS), headers={**admin_headers, **NDJSON}
    )
    assert response.status_code == 201, response.text
    assert copied == [len(MIXED_ROWS)]
