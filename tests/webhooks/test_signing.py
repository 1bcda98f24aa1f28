"""Standard Webhooks signing against the spec's test vector and the reference package."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from charter.core.webhook_signing import (
    SECRET_PREFIX,
    RetrySchedule,
    SignatureError,
    new_msg_id,
    new_secret,
    secret_key,
    sign_headers,
    signature,
    verify,
)

# The example in the Standard Webhooks specification.
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_spec_test_vector() -> None:
    assert signature(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE
    headers = sign_headers(SPEC_SECRET, SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY)
    verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIMESTAMP)


def test_the_reference_package_verifies_our_signatures() -> None:
    secret = new_secret()
    body = b'{"type":"job.completed","data":{"job_id":"j1"}}'
    headers = sign_headers(secret, new_msg_id(), int(time.time()), body)
    assert Webhook(secret).verify(body, headers) == {
        "type": "job.completed",
        "data": {"job_id": "j1"},
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)


def test_we_verify_the_reference_packages_signatures() -> None:
    secret = new_secret()
    msg_id, now, body = new_msg_id(), int(time.time()), '{"a":1}'
    theirs = Webhook(secret).sign(msg_id, datetime.fromtimestamp(now, UTC), body)
    headers = {"Webhook-Id": msg_id, "Webhook-Timestamp": str(now), "Webhook-Signature": theirs}
    verify(secret, headers, body.encode(), now=now)


def test_secrets_are_whsec_base64_of_enough_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith(SECRET_PREFIX)
    assert len(secret_key(secret)) >= 24
    assert new_secret() != secret
    assert new_msg_id().startswith("msg_")
    with pytest.raises(ValueError, match="base64"):
        secret_key("whsec_not base64!")


def test_verify_refuses_tampering_staleness_and_missing_headers() -> None:
    secret = new_secret()
    headers = sign_headers(secret, "msg_1", 1_000_000, b"{}")
    verify(secret, headers, b"{}", now=1_000_000 + 299)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(secret, headers, b"{}", now=1_000_000 + 301)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(secret, headers, b"{}", now=1_000_000 - 301)
    with pytest.raises(SignatureError, match="no matching"):
        verify(secret, headers, b'{"x":1}', now=1_000_000)
    with pytest.raises(SignatureError, match="no matching"):
        verify(new_secret(), headers, b"{}", now=1_000_000)
    with pytest.raises(SignatureError, match="missing"):
        verify(secret, {"webhook-id": "msg_1"}, b"{}", now=1_000_000)
    # During a rotation a sender may list several signatures: one matching is enough.
    rotated = dict(headers)
    rotated["webhook-signature"] = "v1,AAAA " + headers["webhook-signature"]
    verify(secret, rotated, b"{}", now=1_000_000)


def test_backoff_grows_exponentially_with_jitter_and_is_capped() -> None:
    schedule = RetrySchedule(base_s=5, factor=2, max_delay_s=3600, max_total_s=86400, jitter=0.5)
    rng = random.Random(7)
    for attempts in range(1, 20):
        ceiling = min(5 * 2 ** (attempts - 1), 3600)
        delays = [schedule.delay(attempts, rng) for _ in range(50)]
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert RetrySchedule(jitter=0).delay(3) == 20.0


def test_retries_stop_once_the_bounded_time_is_spent() -> None:
    schedule = RetrySchedule(base_s=5, factor=2, max_delay_s=3600, max_total_s=3600, jitter=0)
    elapsed, attempts = 0.0, 0
    while (wait := schedule.next_delay(attempts + 1, elapsed)) is not None:
        attempts += 1
        elapsed += wait
    assert elapsed <= 3600
    assert attempts == 9  # 5+10+...+1280 = 2555 s; the next wait (2560 s) would overrun
    assert RetrySchedule(max_total_s=0).next_delay(1, 0.0) is None


def test_a_nonsensical_schedule_is_refused() -> None:
    with pytest.raises(ValueError):
        RetrySchedule(base_s=0)
    with pytest.raises(ValueError):
        RetrySchedule(jitter=1.0)
