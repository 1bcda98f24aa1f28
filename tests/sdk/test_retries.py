"""Retries through a misbehaving proxy in front of a live gateway: the same
Idempotency-Key on every attempt (so a lost answer is replayed, not done twice),
Retry-After respected, connection drops retried, and the retries bounded."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from charter.client import CharterClient
from charter.sdk import AsyncCharterClient, RateLimited, RetryPolicy, Unavailable

ROWS = [{"prompt": "one?"}, {"prompt": "two?"}]


def _gaps(seen: list[Any]) -> list[float]:
    return [b.at - a.at for a, b in itertools.pairwise(seen)]


def test_a_lost_answer_is_retried_with_the_same_key_and_replayed(
    proxy: Any, admin_key: str
) -> None:
    proxy.plan = [("lose", 503, 1)]  # the gateway commits the batch; the answer is lost
    with CharterClient(proxy.url, admin_key) as sdk:
        batch = sdk.batches.create(ROWS, name="once")
        posts = proxy.requests("POST", "/v1/batches")
        assert len(posts) == 2
        assert posts[0].idempotency_key and posts[0].idempotency_key == posts[1].idempotency_key
        assert _gaps(posts)[0] >= 0.95  # Retry-After: 1
        # The gateway replayed the first attempt's answer: one batch, the one returned.
        assert [b.id for b in sdk.batches.list()] == [batch.id]
        # Another call is another operation: a new key.
        sdk.batches.create(ROWS, name="twice")
        assert proxy.requests("POST", "/v1/batches")[-1].idempotency_key != posts[0].idempotency_key


def test_retry_after_is_respected_not_the_backoff(proxy: Any, admin_key: str) -> None:
    proxy.plan = [("answer", 429, 2)]
    policy = RetryPolicy(backoff=0.05)  # without Retry-After it would retry in 50 ms
    with CharterClient(proxy.url, admin_key, retry=policy) as sdk:
        assert list(sdk.batches.list()) == []
    gets = proxy.requests("GET", "/v1/batches")
    assert len(gets) == 2 and 1.95 <= _gaps(gets)[0] < 10


def test_retries_are_bounded_and_end_in_the_error(proxy: Any, admin_key: str) -> None:
    proxy.plan = [("answer", 503, 0)] * 5
    with CharterClient(proxy.url, admin_key, retry=RetryPolicy(attempts=3, backoff=0.01)) as sdk:
        start = time.monotonic()
        with pytest.raises(Unavailable) as spent:
            sdk.jobs.get("x")
        assert time.monotonic() - start < 5
    assert len(proxy.requests("GET", "/v1/jobs/x")) == 3
    assert spent.value.status_code == 503 and spent.value.detail == "proxy"
    assert spent.value.retry_after == 0


def test_a_dropped_connection_is_retried_with_the_same_key(proxy: Any, admin_key: str) -> None:
    proxy.plan = [("drop",)]
    with CharterClient(proxy.url, admin_key, retry=RetryPolicy(backoff=0.05)) as sdk:
        batch = sdk.batches.create(ROWS)
        assert batch.row_count == 2
    posts = proxy.requests("POST", "/v1/batches")
    assert len(posts) == 2 and posts[0].idempotency_key == posts[1].idempotency_key


def test_a_streamed_upload_is_sent_again_whole(proxy: Any, admin_key: str, tmp_path: Any) -> None:
    path = tmp_path / "prompts.csv"
    path.write_text("prompt\n" + "".join(f"p{i}\n" for i in range(1200)))
    proxy.plan = [("answer", 503, 0)]
    with CharterClient(proxy.url, admin_key, retry=RetryPolicy(backoff=0.01)) as sdk:
        batch = sdk.batches.upload(path)
    posts = proxy.requests("POST", "/v1/batches/upload")
    assert len(posts) == 2 and posts[0].body == posts[1].body and posts[1].body.count(b"\n") == 1200
    assert posts[0].idempotency_key == posts[1].idempotency_key
    assert batch.row_count == 1200


def test_async_client_retries_with_the_same_key(proxy: Any, admin_key: str) -> None:
    async def main() -> tuple[Any, list[Any]]:
        proxy.plan = [("lose", 503, 1)]
        async with AsyncCharterClient(proxy.url, admin_key) as sdk:
            batch = await sdk.batches.create(ROWS, name="async")
            listed = [b async for b in sdk.batches.list()]
            return batch, listed

    batch, listed = asyncio.run(main())
    posts = proxy.requests("POST", "/v1/batches")
    assert len(posts) == 2 and posts[0].idempotency_key == posts[1].idempotency_key
    assert _gaps(posts)[0] >= 0.95
    assert [b.id for b in listed] == [batch.id]


def test_async_retries_are_bounded(proxy: Any, admin_key: str) -> None:
    async def main() -> None:
        policy = RetryPolicy(attempts=2, backoff=0.01)
        async with AsyncCharterClient(proxy.url, admin_key, retry=policy) as sdk:
            await sdk.jobs.get("x")

    proxy.plan = [("answer", 429, 0)] * 3
    with pytest.raises(RateLimited) as spent:
        asyncio.run(main())
    assert spent.value.status_code == 429 and len(proxy.requests("GET", "/v1/jobs/x")) == 2
