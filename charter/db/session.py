"""Engine and session factory for PostgreSQL (production) and SQLite (embedded),
and what to do when the database goes away for a while.

A database restart or failover kills every pooled connection. ``pool_pre_ping``
tests a connection as it leaves the pool, so a dead one is replaced instead of
failing the request or task that got it, and one disconnect seen invalidates
the whole pool; ``connect_timeout`` and TCP keepalives bound how long a
connection attempt or a read from a vanished host can hang. A unit of work that
fails anyway is told apart by :func:`is_transient`: the gateway answers those
503 with ``Retry-After``, workers wait for the database with
:func:`retry_transient` instead of failing their task.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import tenacity
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from charter.settings import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")

POSTGRES_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 10,
    # A host that vanished (failover, network cut) is noticed in about a minute
    # instead of when the kernel gives up on the socket (hours).
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

_TRANSIENT_SQLSTATES = (
    "08",  # connection exception: refused, lost, reset
    "53",  # insufficient resources: disk full, out of memory, too many connections
    "57P01",  # admin shutdown (a fast or immediate stop terminated the session)
    "57P02",  # crash shutdown
    "57P03",  # cannot connect now: starting up, shutting down, in recovery
    "58030",  # I/O error
    "40001",  # serialization failure
    "40P01",  # deadlock detected
    "25006",  # read-only transaction: a standby, or writes refused for maintenance
)
_TRANSIENT_SQLITE = {5, 6, 10, 13}  # BUSY, LOCKED, IOERR, FULL (primary result codes)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` came from the database's state rather than from the statement:
    the connection was refused or lost, the server is stopping, starting or out of
    space, it refuses writes, or it chose this transaction as a deadlock victim. The
    same transaction may succeed once that passes; a constraint violation, bad data or
    a bug will not, and is never retried."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free in time
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig: BaseException | None = exc.orig
    elif isinstance(exc, psycopg.Error):  # raised on the raw connection (COPY)
        orig = exc
    else:
        return False
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return str(sqlstate).startswith(_TRANSIENT_SQLSTATES)
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _TRANSIENT_SQLITE
    # psycopg without a SQLSTATE: the client could not reach or keep the server.
    return isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)


def retry_transient(
    work: Callable[[bool], T],
    *,
    seconds: float,
    what: str,
    first_delay: float = 0.1,
    max_delay: float = 1.0,
) -> T:
    """Run ``work`` (one whole transaction) again while it fails transiently, with
    backoff, for up to ``seconds``; then the last error is raised, as is any other
    error at once.

    ``work(retry)`` is told whether an earlier try failed. A try that failed at its
    COMMIT may have committed all the same (the server wrote it, the answer died
    with the connection), so such work first reads whether its effects are there.
    The delay is capped at ``max_delay``: the work resumes within that of the
    database's return.
    """

    def warn(state: tenacity.RetryCallState) -> None:
        failures = state.attempt_number
        if failures == 1 or failures % 30 == 0:  # one line per outage, not per try
            exc = state.outcome.exception() if state.outcome else None
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            log.warning("%s: database unavailable (%s); retrying", what, reason)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_before_delay(seconds),  # no sleep that would end past the bound
        wait=tenacity.wait_exponential(multiplier=first_delay, min=first_delay, max=max_delay),
        before_sleep=warn,
        reraise=True,
    )
    for attempt in retrying:
        with attempt:
            failures = attempt.retry_state.attempt_number - 1
            result = work(failures > 0)
    if failures:
        log.warning("%s: database back after %d failed tries", what, failures)
    return result


def make_engine(url: str, *, pool_size: int | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url``. On PostgreSQL the pool keeps ``pool_size`` connections
    (default ``database_pool_size``) and lets as many again overflow: the gateway admits
    ``pool_size`` requests at a time, so the overflow serves what runs beside a request's
    own session (after-commit publishing, streamed exports). Connections are tested as
    they leave the pool (``pool_pre_ping``), so those a restart killed are replaced."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        if "poolclass" not in kwargs:
            size = pool_size or get_settings().database_pool_size
            kwargs = {"pool_size": size, "max_overflow": size} | kwargs
        connect_args = POSTGRES_CONNECT_ARGS | kwargs.pop("connect_args", {})
        engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "do_connect")
        def _name(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
            # At connect time, not at creation: a pool process inherits its engine.
            params.setdefault("application_name", session_name())

        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Own the transaction boundaries so that every transaction can start with
        # BEGIN IMMEDIATE: several worker processes share the file, and taking the
        # write lock up front avoids SQLite's read-then-upgrade deadlock.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def session_name(pid: int | None = None) -> str:
    """The ``application_name`` of a process's PostgreSQL sessions, ``charter pid@host``
    (the pid first: PostgreSQL cuts names at 63 bytes), so ``pg_stat_activity`` says
    whose each session is, and a process can end its own (:func:`end_sessions_of`)."""
    return f"charter {pid or os.getpid()}@{socket.gethostname()}"[:63]


def end_sessions_of(session: Session, pid: int | None = None) -> int:
    """PostgreSQL: end the other sessions of process ``pid`` (default: this one) that
    are inside a statement or a transaction; how many (0 on SQLite).

    For a process being stopped: interrupted in the middle of a transaction, its own
    connection may stay open with the transaction's row locks, and the statements that
    give those rows back, on a connection of their own, would wait for them forever. A
    killed process's sessions end with their sockets; ending them here is only sooner.
    """
    if not is_postgres(session.get_bind()):
        return 0
    ended = session.scalar(
        text(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = :name AND pid <> pg_backend_pid() AND state <> 'idle'"
        ),
        {"name": session_name(pid)},
    )
    return int(ended or 0)


def pool_size(engine: Engine) -> int | None:
    """The size of a bounded (queue) pool; None for pools without a bound to respect
    (a connection per thread, per checkout, or one shared)."""
    return engine.pool.size() if isinstance(engine.pool, QueuePool) else None


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


@lru_cache
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def default_engine() -> Engine:
    """One pooled engine per process for the configured database."""
    return _engine_for(get_settings().effective_database_url)


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=engine or default_engine(), expire_on_commit=False)


def transaction_id(session: Session) -> str | None:
    """PostgreSQL: the id of the session's transaction once it has written something
    (pending ORM changes are flushed first); None when it wrote nothing, or on SQLite.

    Taken just before a COMMIT so that a commit whose connection died before the
    server's answer can be settled afterwards with :func:`committed`."""
    if session.get_bind().dialect.name != "postgresql":
        return None
    session.flush()
    value = session.scalar(text("SELECT pg_current_xact_id_if_assigned()::text"))
    return None if value is None else str(value)


def committed(engine: Engine, xid: str) -> bool | None:
    """Whether transaction ``xid`` committed, asked over a fresh connection: True, False
    (aborted, or never reached the server), or None when the database cannot say now."""
    for _ in range(10):
        try:
            with engine.connect() as conn:
                status = conn.scalar(
                    text("SELECT pg_xact_status(CAST(:xid AS xid8))"), {"xid": xid}
                )
        except sa_exc.DBAPIError:
            return None
        if status != "in progress":
            return status == "committed"
        time.sleep(0.1)  # the server is still finishing it, or has not seen the drop yet
    return None
