"""``retry_transient``: transient database errors are retried with backoff within a bound,
anything else is raised at once, and ``work`` is told when it runs again."""

from __future__ import annotations

import logging
import time

import pytest
from sqlalchemy import exc as sa_exc

from charter.db.session import retry_transient


def transient() -> Exception:
    return sa_exc.TimeoutError("QueuePool limit reached")  # no connection came free


def test_transient_failures_are_retried_and_work_is_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[bool] = []

    def work(retry: bool) -> str:
        calls.append(retry)
        if len(calls) < 3:
            raise transient()
        return "written"

    caplog.set_level(logging.WARNING, logger="charter.db.session")
    started = time.monotonic()
    assert retry_transient(work, seconds=10, what="label write", first_delay=0.05) == "written"
    assert calls == [False, True, True]
    assert 0.05 + 0.1 <= time.monotonic() - started < 2.0  # backoff: 0.05, then 0.1
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("label write: database unavailable (QueuePool limit")
    assert messages[-1] == "label write: database back after 2 failed tries"


def test_other_errors_are_raised_at_once() -> None:
    calls: list[bool] = []

    def work(retry: bool) -> None:
        calls.append(retry)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        retry_transient(work, seconds=10, what="claim")
    assert calls == [False]


def test_gives_up_with_the_last_error_within_the_bound() -> None:
    calls: list[bool] = []

    def work(retry: bool) -> None:
        calls.append(retry)
        raise transient()

    started = time.monotonic()
    with pytest.raises(sa_exc.TimeoutError):
        retry_transient(work, seconds=0.5, what="claim", first_delay=0.05, max_delay=0.1)
    elapsed = time.monotonic() - started
    assert elapsed <= 0.5 + 0.05  # no sleep that would end past the bound
    assert len(calls) >= 4 and calls[1:] == [True] * (len(calls) - 1)
