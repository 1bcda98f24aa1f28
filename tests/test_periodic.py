"""``Periodic``: the one repeating thread behind heartbeats and lease keepers."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from charter.periodic import Periodic


def wait_until(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_calls_repeat_until_stopped_and_stop_waits_for_the_call_in_progress() -> None:
    calls: list[float] = []
    inside = threading.Event()
    release = threading.Event()

    def fn() -> None:
        calls.append(time.monotonic())
        if len(calls) == 3:
            inside.set()
            release.wait(5)

    beats = Periodic("test", 0.01, fn).start()
    assert inside.wait(5)
    stopper = threading.Thread(target=beats.stop)
    stopper.start()
    stopper.join(0.2)
    assert stopper.is_alive(), "stop returned while a call was still running"
    release.set()
    stopper.join(5)
    assert not stopper.is_alive()
    count = len(calls)
    time.sleep(0.05)
    assert len(calls) == count == 3  # nothing after stop


def test_the_first_call_comes_after_one_interval() -> None:
    calls: list[int] = []
    with Periodic("test", 0.3, lambda: calls.append(1)):
        time.sleep(0.1)
        assert calls == []
    assert calls == []  # stopped before the first interval ended


def test_failures_are_retried_and_an_outage_is_logged_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes = [RuntimeError("db down\nsecond line")] * 4 + [None] * 3 + [ValueError("again")]
    done = threading.Event()

    def fn() -> None:
        outcome = outcomes.pop(0) if outcomes else None
        if not outcomes:
            done.set()
        if outcome is not None:
            raise outcome

    caplog.set_level(logging.WARNING, logger="charter.periodic")
    with Periodic("beat", 0.005, fn):
        assert done.wait(5)
        wait_until(lambda: len(caplog.records) == 4)
    assert [r.getMessage() for r in caplog.records] == [
        "beat failed (db down); retrying every 0.005 s",
        "beat back after 4 failed calls",
        "beat failed (again); retrying every 0.005 s",
        "beat back after 1 failed calls",
    ]


def test_an_exception_never_kills_the_thread() -> None:
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        raise KeyError("boom")

    with Periodic("test", 0.005, fn) as beats:
        wait_until(lambda: len(calls) >= 5)
        assert beats.failures >= 5


@pytest.mark.parametrize("interval", [0, -1.0])
def test_an_interval_that_is_not_positive_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="interval must be positive"):
        Periodic("test", interval, lambda: None)
