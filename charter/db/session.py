"""Engine and session factory for PostgreSQL (production) and SQLite (embedded)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from charter.settings import get_settings


def make_engine(url: str, *, pool_size: int | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url``. On PostgreSQL the pool keeps ``pool_size`` connections
    (default ``database_pool_size``) and lets as many again overflow: the gateway admits
    ``pool_size`` requests at a time, so the overflow serves what runs beside a request's
    own session (after-commit publishing, streamed exports)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        if "poolclass" not in kwargs:
            size = pool_size or get_settings().database_pool_size
            kwargs = {"pool_size": size, "max_overflow": size} | kwargs
        return create_engine(url, pool_pre_ping=True, **kwargs)
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
