"""Stopping a worker within a bound, its chunk in flight given back at once.

SIGTERM or SIGINT, sent to the whole process group (Ctrl-C, a service manager
stopping a ``charter worker``) or to the main process only (``kill``, ``docker
stop`` of a container whose PID 1 is the worker):

1. The main process begins Celery's warm (or cold) shutdown. Its
   ``worker_shutting_down`` hook (workers.celery_app) stops the pool from
   replacing processes that exit, and starts a :class:`Watchdog` that sends the
   pool's terminate signal (SIGTERM; SIGQUIT under ``REMAP_SIGTERM=SIGQUIT``) to
   every pool process, again each half second until they are gone.
2. A pool process running a chunk takes that signal as :class:`Interrupted`,
   raised in its task (:func:`run_interruptible`); then, whatever became of the
   exception, the task gives the chunk back (``leases.give_back``: queued again,
   the attempt not counted, published again so another worker takes it now, not
   when its lease expires) on connections of its own, since the interruption may
   have cut a statement short, and returns. An idle pool process ignores the
   signal and exits when the closing pool tells it to (:func:`defer_when_idle`); a
   task it starts after the signal is interrupted by the watchdog's next one.
3. Why the pool must stop replacing processes first: billiard replaces a pool
   process that exited while the pool still runs, and a SIGTERM to the group ends
   the idle ones before the main process has closed its pool. The replacement
   loaded the model during the shutdown (tens of seconds on a busy CPU, minutes
   with vLLM); with the filesystem broker it was forked by the pool's supervisor
   thread, whose end sends it the kernel's parent-death SIGKILL, which could hit it
   holding the pool's result-pipe lock: the pool's join then waited forever.
4. A pool process that has stopped waits for the main process to have read each of
   its results before it exits (billiard's message-consumption guarantee, up to 30 s).
   Celery's shutdown discards the jobs whose acknowledgement it has not yet read
   (``AsynPool.flush``), and stops reading results once it holds no job: a chunk
   a pool process had just started is one of those, and its result is never read,
   so the process sat out the whole 30 s and was killed by the backstop (one stop
   in a few dozen, with small chunks). That wait is bounded here
   (:func:`bound_result_wait`) to a quarter of the bound: results are read within
   milliseconds when they are read at all.
5. Backstop: a pool process still alive at three quarters of
   ``worker_shutdown_seconds`` (stuck in a native call that never returns to
   Python) first writes every thread's stack to stderr (:data:`STACK_SIGNAL`, for
   whoever reads the log), then is killed and its items given back by the main
   process, which exits hard, saying so, if it is still alive at the bound.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from typing import Any, TypeVar

import billiard.pool
from billiard.common import TERM_SIGNAL

log = logging.getLogger(__name__)
T = TypeVar("T")


class Interrupted(BaseException):
    """Raised in a pool process's running task by the terminate signal.

    A BaseException, like KeyboardInterrupt, so no ``except Exception`` on the way
    (a database retry, an engine's error handling) mistakes it for a failure."""


STACK_SIGNAL = signal.SIGUSR2
"""Sent by the watchdog to a pool process it is about to kill: the process writes every
thread's stack to the real stderr (:func:`dump_stacks_on_signal`). Not SIGUSR1: billiard
takes that one for soft time limits once the pool process's initializer has returned,
and raised ``SoftTimeLimitExceeded`` in the stuck process instead of writing stacks."""
STACK_WAIT_SECONDS = 0.3
"""How long the watchdog leaves that process to write them before the kill."""

_state: dict[str, Any] = {"working": False, "signalled": False, "stopping": False, "at": 0.0}
REPEAT_SECONDS = 1.0
"""A signal raises again this long after the last: a library's cleanup may have turned
the first into an error of its own, or a retry swallowed it; sooner, it would only
interrupt the unwinding of the last one."""


def _on_term(signum: int, frame: object) -> None:
    _state["stopping"] = True
    if not _state["working"]:
        return  # giving back: noted, nothing interrupted
    _state["signalled"] = True
    if time.monotonic() - _state["at"] >= REPEAT_SECONDS:
        _state["at"] = time.monotonic()
        raise Interrupted


def defer_when_idle() -> None:
    """In a pool process, at the end of its initializer: the terminate signal no longer
    ends it between tasks; it exits when the closing pool tells it to (a sentinel on its
    queue), or is killed by the watchdog's backstop.

    Ignored, not handled: billiard, once the initializer returns, replaces any handler
    of the signal with its own (which exits, and sets the signal back to its default
    action) but leaves an ignored signal alone. With billiard's handler, the next signal
    (the group's and the watchdog's come together) found the default action; the kernel
    delivered it to a thread that does not block it (heartbeat, lease keeper) while the
    main thread, exiting, held the lock of the pool's result pipe to send its death
    notice (billiard blocks the signal in that thread only): the process died holding
    the lock and the main process's pool join waited on it until the hard exit at the
    bound (one idle stop in two to four, with the filesystem broker)."""
    signal.signal(TERM_SIGNAL, signal.SIG_IGN)


def bound_result_wait(seconds: float) -> None:
    """In a pool process: wait at most ``seconds`` at its exit for the main process to
    read its last results (billiard's own bound is 30 s; 4. above)."""
    retries = seconds / billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_INTERVAL
    billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT = min(
        billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT, max(1, int(retries))
    )


def dump_stacks_on_signal() -> None:
    """In a pool process: :data:`STACK_SIGNAL` writes every thread's stack, from the C
    level (so also while the process is stuck in a native call), to the real stderr
    (Celery replaces ``sys.stderr`` with a logging proxy that has no file)."""
    with suppress(AttributeError, ValueError, OSError):  # no real stderr: nowhere to write
        faulthandler.register(STACK_SIGNAL, file=sys.__stderr__, all_threads=True)


def run_interruptible(work: Callable[[], T], on_interrupt: Callable[[], T]) -> T:
    """``work()``, unless the terminate signal comes before it ends: then
    ``on_interrupt()``, whatever ``work`` did with the :class:`Interrupted` (raised,
    turned into another error, or swallowed and went on), and no signal interrupts
    ``on_interrupt``. Outside this, the signal is ignored (:func:`defer_when_idle`)."""
    previous = signal.getsignal(TERM_SIGNAL)
    try:
        signal.signal(TERM_SIGNAL, _on_term)
        _state.update(working=True, signalled=_state["stopping"], at=0.0)
        try:
            if _state["signalled"]:  # the signal came before the task did
                raise Interrupted
            result = work()
            _state["working"] = False
        except BaseException:
            _state["working"] = False
            if not _state["signalled"]:
                raise
        if _state["signalled"]:
            return on_interrupt()
        return result
    finally:
        _state["working"] = False
        signal.signal(TERM_SIGNAL, signal.SIG_DFL if previous is None else previous)


class Watchdog(threading.Thread):
    """In the main process, from the first shutdown signal: stop the pool processes,
    kill any that outlive three quarters of the bound, exit hard at the bound."""

    def __init__(
        self,
        pool_pids: Callable[[], Iterable[int]],
        give_back: Callable[[int], object],
        seconds: float,
        exitcode: int,
    ) -> None:
        super().__init__(name="shutdown-watchdog", daemon=True)
        self.pool_pids, self.give_back = pool_pids, give_back
        self.seconds, self.exitcode = seconds, exitcode
        self.started_at = time.monotonic()

    def run(self) -> None:
        kill_at = self.started_at + 0.75 * self.seconds
        exit_at = self.started_at + self.seconds
        killed = False
        while time.monotonic() < exit_at:
            pids = list(self.pool_pids())
            if not killed and time.monotonic() >= kill_at:
                killed = True
                for pid in pids:
                    log.error(
                        "pool process %s still running at shutdown: its stacks follow; killing it",
                        pid,
                    )
                    with suppress(ProcessLookupError):
                        os.kill(pid, STACK_SIGNAL)
                if pids:
                    time.sleep(STACK_WAIT_SECONDS)
                for pid in pids:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    try:
                        self.give_back(pid)
                    except Exception:  # the lease then expires; the sweeper re-queues it
                        log.exception("could not give back what process %s held", pid)
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, TERM_SIGNAL)
            time.sleep(0.5)
        log.error("worker still not stopped %.0f s after the signal: exiting now", self.seconds)
        logging.shutdown()
        # Where it hung, for whoever reads the log: every thread's stack, on the real
        # stderr (Celery replaces sys.stderr with a logging proxy that has no file).
        with suppress(Exception):
            faulthandler.dump_traceback(file=sys.__stderr__, all_threads=True)
        os._exit(self.exitcode)
