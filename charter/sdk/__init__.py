"""Charter's Python SDK: the whole REST API, synchronous and asynchronous.

    from charter.sdk import CharterClient, AsyncCharterClient

    with CharterClient() as client:                      # CHARTER_API_URL, CHARTER_API_KEY
        batch = client.batches.upload("prompts.parquet")  # a models.BatchOut
        job = client.jobs.submit(type="sl_cai", batch_id=batch.id)
        job = client.jobs.wait(job.id)
        for label in client.jobs.results(job.id):        # every page
            ...

    async with AsyncCharterClient() as client:
        job = await client.jobs.get(job_id)
        async for label in client.jobs.results(job_id):
            ...

Layout: :mod:`~charter.sdk.api` describes each operation once, as a
:class:`~charter.sdk.calls.Call` (or a generator of calls for waits); the two
clients in :mod:`~charter.sdk.clients` only send them (retries, cursors, sleeps).
Every POST carries an ``Idempotency-Key`` (uuid4) reused by each retry of that call;
connection errors and 429/503 are retried with backoff, honouring ``Retry-After``
(:class:`~charter.sdk.calls.RetryPolicy`); errors raise
:class:`~charter.sdk.errors.CharterAPIError` subclasses carrying the error body.

Why the models are generated: the gateway's pydantic schemas live in
``services.gateway.*.schemas``, and ``charter`` may not import ``services`` (the
``charter-composition-roots`` import contract: an SDK user installs no FastAPI or
SQLAlchemy), nor may the schemas move while the gateway is being extended. So
:mod:`~charter.sdk.models` is generated from the live app's OpenAPI document by
datamodel-code-generator (``python -m charter.cli.sdk_models``) and committed;
``tests/sdk/test_models_fresh.py`` regenerates it from ``app.openapi()`` and fails
when the committed file is stale. The models allow extra fields, so an older SDK
reads a newer gateway's answers.
"""

from __future__ import annotations

from charter.sdk import models
from charter.sdk.calls import Call, RetryPolicy
from charter.sdk.clients import AsyncCharterClient, SyncClient
from charter.sdk.errors import (
    BadRequest,
    CharterAPIError,
    ChecksumMismatch,
    Conflict,
    Forbidden,
    FreezeFailed,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
)


def __getattr__(name: str) -> object:
    if name == "CharterClient":  # defined with its older flat methods in charter.client
        from charter.client import CharterClient

        return CharterClient
    raise AttributeError(name)


__all__ = [
    "AsyncCharterClient",
    "BadRequest",
    "Call",
    "CharterAPIError",
    "CharterClient",
    "ChecksumMismatch",
    "Conflict",
    "Forbidden",
    "FreezeFailed",
    "NotFound",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "SyncClient",
    "Unauthorized",
    "Unavailable",
    "models",
]
