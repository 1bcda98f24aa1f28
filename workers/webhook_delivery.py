"""Sends due webhook deliveries: claim, commit, send concurrently, then record.

Called by the sweeper each pass. No transaction is open during an HTTP call: a
round claims up to ``webhook_batch_size`` due rows (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so several sweepers share the work) by counting the attempt and pushing
``next_attempt_at`` past the time the round can take (the lease), and commits. The
rows are then sent by a small thread pool, each request bounded by
``webhook_timeout_seconds``, so a receiver that hangs holds one thread, not the
others. Each result is recorded in its own transaction, fenced by the attempt
number and cycle start it was claimed with (a resend meanwhile wins). A sweeper
that dies mid-round leaves its rows pending; they come due again when the lease
runs out. Receivers must therefore expect the rare duplicate: ``webhook-id`` stays
the same across attempts so they can drop it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from charter.core.webhook_signing import DeliveryStatus, RetrySchedule, sign_headers
from charter.db.models import WebhookDelivery, WebhookEndpoint, utcnow
from charter.settings import Settings

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 4096
"""Read at most this much of a receiver's answer (kept, shortened, in ``last_error``)."""
MAX_ROUNDS = 10
"""Claim rounds per call, so one sweep pass stays bounded however large the backlog."""
LEASE_MARGIN_S = 30.0
USER_AGENT = "Charter-Webhooks/1"


@dataclass(frozen=True)
class Claimed:
    """What a send needs, copied out of the claiming transaction."""

    id: str
    msg_id: str
    url: str
    secret: str
    body: bytes
    attempts: int
    cycle_started_at: datetime


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_schedule(settings: Settings) -> RetrySchedule:
    return RetrySchedule(max_total_s=settings.webhook_max_retry_hours * 3600.0)


@contextmanager
def http_client(settings: Settings) -> Iterator[httpx.Client]:
    """The client deliveries go out on: no redirects, no proxies from the environment,
    a connection per concurrent send."""
    limits = httpx.Limits(max_connections=settings.webhook_concurrency)
    with httpx.Client(
        timeout=settings.webhook_timeout_seconds,
        follow_redirects=False,
        trust_env=False,
        limits=limits,
        headers={"user-agent": USER_AGENT},
    ) as client:
        yield client


def _claim(
    sessions: sessionmaker[Session], settings: Settings, now: datetime, lease_s: float
) -> list[Claimed]:
    with sessions() as session, session.begin():
        query = (
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.next_attempt_at <= now,
                WebhookEndpoint.enabled.is_(True),
            )
            .order_by(WebhookDelivery.next_attempt_at)
            .limit(settings.webhook_batch_size)
        )
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True, of=WebhookDelivery)
        claimed = []
        for row, endpoint in session.execute(query):
            row.attempts += 1
            row.last_attempt_at = now
            row.next_attempt_at = now + timedelta(seconds=lease_s)
            body = json.dumps(row.payload, separators=(",", ":"), ensure_ascii=False).encode()
            claimed.append(
                Claimed(
                    row.id,
                    row.msg_id,
                    endpoint.url,
                    endpoint.secret,
                    body,
                    row.attempts,
                    row.cycle_started_at,
                )
            )
        return claimed


def send(client: httpx.Client, item: Claimed, timeout_s: float) -> Outcome:
    """One signed POST; never raises. Redirects are not followed (a 3xx is a failure)."""
    if urlsplit(item.url).scheme not in ("http", "https"):
        return Outcome(None, "refused: the URL is not http(s)")
    headers = {
        "content-type": "application/json",
        **sign_headers(item.secret, item.msg_id, int(time.time()), item.body),
    }
    started = time.monotonic()
    try:
        with client.stream("POST", item.url, content=item.body, headers=headers) as response:
            # A capped read, also bounded in total time (the timeout is per network read).
            answer = b""
            for chunk in response.iter_bytes():
                answer += chunk
                if len(answer) >= MAX_RESPONSE_BYTES or time.monotonic() - started > timeout_s:
                    break
            if 200 <= response.status_code < 300:
                return Outcome(response.status_code, None)
            excerpt = answer[:200].decode("utf-8", "replace")
            return Outcome(response.status_code, f"HTTP {response.status_code}: {excerpt}")
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500])


def _record(
    sessions: sessionmaker[Session],
    item: Claimed,
    outcome: Outcome,
    schedule: RetrySchedule,
) -> None:
    with sessions() as session, session.begin():
        row = session.get(WebhookDelivery, item.id, with_for_update=True)
        if (
            row is None  # its endpoint was deleted meanwhile
            or row.status != DeliveryStatus.PENDING
            or row.attempts != item.attempts
            or row.cycle_started_at != item.cycle_started_at  # resent meanwhile
        ):
            return
        finished = utcnow()
        row.last_status_code = outcome.status_code
        row.last_error = outcome.error
        if outcome.ok:
            row.status = DeliveryStatus.DELIVERED
            row.delivered_at = finished
            return
        attempted = row.last_attempt_at or finished
        elapsed = (attempted - row.cycle_started_at).total_seconds()
        delay = schedule.next_delay(row.attempts, elapsed)
        if delay is None:
            row.status = DeliveryStatus.FAILED
        else:
            row.next_attempt_at = attempted + timedelta(seconds=delay)


def deliver_due(
    sessions: sessionmaker[Session],
    http_client: httpx.Client,
    settings: Settings,
    now: datetime | None = None,
) -> int:
    """Send every delivery due at ``now`` (default: the clock); how many attempts were made.

    ``now`` decides what is due and when retries are scheduled; signatures always carry
    the real time, which receivers check against their clock.
    """
    schedule = retry_schedule(settings)
    workers = settings.webhook_concurrency
    timeout = settings.webhook_timeout_seconds
    rounds = math.ceil(settings.webhook_batch_size / workers)
    lease_s = rounds * timeout * 2 + LEASE_MARGIN_S
    attempted = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook") as pool:
        for _ in range(MAX_ROUNDS):
            at = now or utcnow()
            claimed = _claim(sessions, settings, at, lease_s)
            if not claimed:
                break

            def deliver(item: Claimed) -> None:
                _record(sessions, item, send(http_client, item, timeout), schedule)

            for result in [pool.submit(deliver, item) for item in claimed]:
                try:
                    result.result()
                except Exception:  # a database error on one record: the lease retries it
                    log.exception("recording a webhook delivery failed")
            attempted += len(claimed)
            if len(claimed) < settings.webhook_batch_size:
                break
    return attempted
