"""Streamed batch uploads: lines split across chunks exactly as a whole body splits, the
hand-checked fast path agrees with ``PromptRow``, and a bad line anywhere in a streamed
upload stores nothing."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import Engine, func, select

from charter.db.models import Prompt, PromptBatch
from charter.db.session import session_factory
from charter.errors import TooLarge
from services.gateway.batches.schemas import TEXT_MAX, PromptRow
from services.gateway.batches.service import plain_record, record
from services.gateway.jsonl import split_lines

NDJSON = {"Content-Type": "application/x-ndjson"}


def _cut(body: bytes, rng: random.Random) -> list[bytes]:
    """``body`` in chunks of random sizes (some empty), as a network would deliver it."""
    chunks: list[bytes] = []
    start = 0
    while start < len(body):
        size = rng.choice((0, 1, 2, 3, 7, 64, 1000))
        chunks.append(body[start : start + size])
        start += size
    return chunks


def test_split_lines_matches_splitlines_whatever_the_chunks() -> None:
    rng = random.Random(7)
    alphabet = [b"a", b"{", b" ", b"\n", b"\r", b"\r\n", b"\xc3\xa9", b"\t"]
    for _ in range(400):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        expected = list(enumerate(body.splitlines(), start=1))
        assert list(split_lines(_cut(body, rng), 1024)) == expected, body
        assert list(split_lines([body], 1024)) == expected, body


def test_split_lines_refuses_an_unfinished_line_over_the_limit() -> None:
    chunks = [b'{"prompt": "ok"}\n{"prompt": "', b"p" * 600, b"p" * 600]
    lines = split_lines(chunks, 1024)
    assert next(lines) == (1, b'{"prompt": "ok"}')
    with pytest.raises(TooLarge) as raised:
        next(lines)  # refused before the rest of the line is read
    assert raised.value.field == "line 2" and "1024 bytes" in str(raised.value)
    # A line at the limit, ending with "\r\n" split over two chunks, is fine.
    line = b"x" * 1024
    assert list(split_lines([line + b"\r", b"\nend"], 1024)) == [(1, line), (2, b"end")]


def _variants() -> Iterator[Any]:
    """Rows around every rule of PromptRow: valid ones and near misses."""
    text = ["", "x", "x" * TEXT_MAX, "x" * (TEXT_MAX + 1), 5, None, ["x"], {"a": 1}, True]
    user = {"role": "user", "content": "hi"}
    messages: list[Any] = [
        [user],
        [{"content": "hi", "role": "user"}],
        [{"role": "system", "content": "s"}, user],
        [user, {"role": "assistant", "content": "a"}],
        [{"role": "robot", "content": "x"}],
        [{"role": "user", "content": "x" * (TEXT_MAX + 1)}],
        [{"role": "user", "content": 3}],
        [{"role": "user"}],
        [{"role": "user", "content": "x", "name": "n"}],
        [{"role": ["user"], "content": "x"}],
        [user] * 64,
        [user] * 65,
        [],
        "not a list",
        [["user", "x"]],
        None,
    ]
    for prompt in text:
        yield {"prompt": prompt}
        yield {"prompt": prompt, "response": "r"}
        yield {"prompt": "p", "response": prompt}
        yield {"prompt": "p", "response_a": prompt, "response_b": "b"}
        yield {"prompt": "p", "response_a": "a", "response_b": prompt}
    for turns in messages:
        yield {"messages": turns}
        yield {"messages": turns, "prompt": "p"}
        yield {"messages": turns, "response_a": "a", "response_b": "b"}
    yield {}
    yield {"prompt": "p", "colour": "blue"}
    yield {"prompt": "p", "response_a": "a"}
    yield {"prompt": None, "messages": None}
    yield {"prompt": "p", "messages": None, "response": None}
    yield ["prompt", "x"]
    yield "prompt"
    yield None


def test_fast_path_accepts_only_what_prompt_row_accepts_with_the_same_record() -> None:
    accepted = 0
    for value in _variants():
        fast = plain_record(value)
        try:
            slow = record(PromptRow.model_validate(value))
        except ValidationError:
            assert fast is None, value
            continue
        accepted += 1
        assert fast == slow, value  # and every valid variant here takes the fast path
    assert accepted == 24


def _lines(n: int, start: int = 0) -> list[bytes]:
    return [json.dumps({"prompt": f"prompt {i}"}).encode() + b"\n" for i in range(start, n)]


def _count(engine: Engine) -> tuple[int, int]:
    with session_factory(engine)() as session:
        return (
            session.scalar(select(func.count()).select_from(PromptBatch)) or 0,
            session.scalar(select(func.count()).select_from(Prompt)) or 0,
        )


def test_streamed_upload_stores_every_row(
    client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    body = b"".join(_lines(5000))
    response = client.post(
        "/v1/batches/upload",
        content=iter(_cut(body, random.Random(1))),  # chunked, lines split anywhere
        headers={**admin_headers, **NDJSON},
    )
    assert response.status_code == 201, response.text
    batch = response.json()
    assert batch["row_count"] == 5000
    page = client.get(
        f"/v1/batches/{batch['id']}/prompts", params={"limit": 3}, headers=admin_headers
    ).json()
    assert [p["prompt"] for p in page["items"]] == ["prompt 0", "prompt 1", "prompt 2"]
    assert _count(engine) == (1, 5000)


@pytest.mark.parametrize(
    ("bad", "status", "words"),
    [
        (b'{"prompt": "x", "colour": 1}\n', 422, "line 4001: colour"),
        (b'{"prompt": "a", "prompt": "b"}\n', 422, "line 4001: prompt: duplicate key"),
        (b'{"messages": [{"role": "assistant", "content": "x"}]}\n', 422, "line 4001"),
        (b'{"prompt": "' + b"p" * 5000 + b'"}\n', 413, "2048 bytes"),
    ],
)
def test_bad_line_late_in_a_streamed_upload_stores_nothing(
    make_client: Any,
    admin_headers: dict[str, str],
    engine: Engine,
    bad: bytes,
    status: int,
    words: str,
) -> None:
    client = make_client(max_jsonl_line_bytes=2048)
    chunks = [*_lines(4000), bad[:100], bad[100:], *_lines(6000, 4000)]
    response = client.post(
        "/v1/batches/upload", content=iter(chunks), headers={**admin_headers, **NDJSON}
    )
    assert response.status_code == status, response.text
    assert response.json()["field"] == "line 4001"
    assert words in response.json()["detail"]
    assert _count(engine) == (0, 0)


def test_too_many_rows_in_a_stream_stores_nothing(
    make_client: Any, admin_headers: dict[str, str], engine: Engine
) -> None:
    client = make_client(max_batch_rows=3000)
    response = client.post(
        "/v1/batches/upload", content=iter(_lines(3001)), headers={**admin_headers, **NDJSON}
    )
    assert response.status_code == 422, response.text
    assert "more than 3000 rows" in response.json()["detail"]
    assert _count(engine) == (0, 0)


def test_upload_with_an_idempotency_key_is_replayed(
    client: TestClient, admin_headers: dict[str, str], engine: Engine
) -> None:
    """With a key the body is read whole first (its hash is the request's fingerprint)."""
    headers = {**admin_headers, **NDJSON, "Idempotency-Key": "upload-1"}
    body = b"".join(_lines(100))
    first = client.post("/v1/batches/upload", content=body, headers=headers)
    again = client.post("/v1/batches/upload", content=iter([body[:50], body[50:]]), headers=headers)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    other = client.post("/v1/batches/upload", content=body[:-20], headers=headers)
    assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
    assert _count(engine) == (1, 100)
