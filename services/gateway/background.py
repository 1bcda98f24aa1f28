"""Background work in a gateway process: one thread per kind, started on demand.

Dataset freezes and the outbox of large jobs outlive the request that asked for
them. Each kind gets an :class:`OnDemand` thread that runs ``work`` for as long as
it reports more to do, then exits; :meth:`OnDemand.wake` starts it again. Nothing
here is durable on its own: the database holds what is left (a freezing version's
lease, a chunk's ``published_at``), so a gateway that dies leaves its work to the
next gateway or the sweeper.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class OnDemand:
    """Runs ``work`` in one daemon thread while it returns True (more to do).

    ``wake`` during a pass asks for one more pass, so no request is missed between
    the thread's last look and its exit. An exception ends the thread (logged); the
    next ``wake`` starts a fresh one.
    """

    def __init__(self, name: str, work: Callable[[], bool]) -> None:
        self.name = name
        self._work = work
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._again = False
        self.stopping = threading.Event()

    def wake(self) -> None:
        """Look for work (now, or right after the current pass)."""
        with self._lock:
            if self.stopping.is_set():
                return
            self._again = True
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """No new passes; wait up to ``timeout`` for the current one to end."""
        self.stopping.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def idle(self) -> bool:
        with self._lock:
            return self._thread is None

    def _run(self) -> None:
        while True:
            with self._lock:  # the decision to exit and the exit are one step for wake()
                if self.stopping.is_set() or not self._again:
                    self._thread = None
                    return
                self._again = False
            try:
                more = self._work()
            except Exception:  # e.g. the database went away: the next wake tries again
                log.exception("%s: background pass failed", self.name)
                with self._lock:
                    self._thread = None
                return
            if more:
                with self._lock:
                    self._again = True
