"""A call repeated every few seconds on a daemon thread until stopped.

The worker's heartbeat, the runner's lease keeper and the trainer's run heartbeat are
all one :class:`Periodic`. A call that raises (the database or the API blipped) is
tried again at the next interval and never kills the thread or the process it keeps
alive; an outage is logged twice, when it starts and when it ends, not at every call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType

log = logging.getLogger(__name__)


def _reason(exc: BaseException) -> str:
    """The first line of what went wrong (SQLAlchemy wraps the driver's error)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Periodic:
    """Call ``fn`` every ``interval`` seconds (first after one interval) until :meth:`stop`.

    Use as a context manager around the work it keeps alive, or :meth:`start` it and
    keep it for the life of the process.
    """

    def __init__(
        self, name: str, interval: float, fn: Callable[[], object], *, logger: logging.Logger = log
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.name = name
        self.interval = interval
        self.fn = fn
        self.log = logger
        self.failures = 0
        """Consecutive failed calls (0 once one succeeds)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def stop(self, *, join: bool = True) -> None:
        """Stop calling; with ``join``, wait for a call in progress to return."""
        self._stop.set()
        if join and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def __enter__(self) -> Periodic:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.fn()
            except Exception as exc:  # retried at the next interval
                self.failures += 1
                if self.failures == 1:
                    self.log.warning(
                        "%s failed (%s); retrying every %g s",
                        self.name,
                        _reason(exc),
                        self.interval,
                    )
            else:
                if self.failures:
                    self.log.warning("%s back after %d failed calls", self.name, self.failures)
                self.failures = 0
