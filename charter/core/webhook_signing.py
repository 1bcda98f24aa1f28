"""Standard Webhooks signing and verification, and the retry schedule of deliveries.

A message is signed with HMAC-SHA256 over ``{webhook-id}.{webhook-timestamp}.{body}``,
keyed by the base64-decoded secret after ``whsec_``; the ``webhook-signature`` header
is a space-separated list of ``v1,<base64 signature>`` so a receiver can accept the
old and the new secret while rotating. Pure: no clock, no network, no database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import random
import secrets
from dataclasses import dataclass
from enum import StrEnum

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
"""Random bytes in a generated secret (the convention asks for 24 to 64)."""
DEFAULT_TOLERANCE_S = 300
"""How far a ``webhook-timestamp`` may be from the receiver's clock (replay window)."""


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class SignatureError(ValueError):
    """A message whose headers are missing, stale or do not match any signature."""


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def new_msg_id() -> str:
    return "msg_" + secrets.token_hex(16)


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret; ``ValueError`` when it is not base64."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("webhook secret is not base64 after 'whsec_'") from exc
    if not key:
        raise ValueError("webhook secret is empty")
    return key


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature of one message."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers a delivery carries."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }


def verify(
    secret: str,
    headers: dict[str, str],
    body: bytes,
    now: int,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> None:
    """Raise ``SignatureError`` unless ``headers`` sign ``body`` with ``secret`` at about ``now``.

    ``now`` is the receiver's clock in Unix seconds; header names are case-insensitive.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    sigs = lower.get("webhook-signature")
    if not (msg_id and stamp and sigs):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise SignatureError("webhook-timestamp is not an integer") from exc
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError("webhook-timestamp is outside the tolerance")
    expected = signature(secret, msg_id, timestamp, body)
    for candidate in sigs.split():
        if candidate.startswith("v1,") and hmac.compare_digest(candidate, expected):
            return
    raise SignatureError("no matching signature")


@dataclass(frozen=True)
class RetrySchedule:
    """Exponential backoff with full jitter, stopping a bounded time after the cycle began.

    Attempt ``n`` (1-based) that failed waits about ``base_s * factor**(n-1)`` seconds,
    capped at ``max_delay_s``, drawn uniformly from ``[(1 - jitter) * d, d]``; no attempt
    is scheduled later than ``max_total_s`` after the cycle's first attempt.
    """

    base_s: float = 5.0
    factor: float = 2.0
    max_delay_s: float = 3600.0
    max_total_s: float = 24 * 3600.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.factor < 1 or self.max_delay_s < self.base_s:
            raise ValueError("retry schedule needs base_s > 0, factor >= 1, max_delay_s >= base_s")
        if not 0 <= self.jitter < 1 or self.max_total_s < 0:
            raise ValueError("retry schedule needs 0 <= jitter < 1 and max_total_s >= 0")

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        exponent = min(max(attempts - 1, 0), 64)
        ceiling = min(self.base_s * self.factor**exponent, self.max_delay_s)
        draw = (rng or random).random()
        return ceiling * (1 - self.jitter * draw)

    def next_delay(
        self, attempts: int, elapsed_s: float, rng: random.Random | None = None
    ) -> float | None:
        """Seconds until the next attempt, or None when the cycle's time is spent.

        ``elapsed_s`` is the time since the cycle began, at the failed attempt.
        """
        wait = self.delay(attempts, rng)
        if elapsed_s + wait > self.max_total_s:
            return None
        return wait
