"""The fault matrix's fixtures: a PostgreSQL and a Redis of the module's own.

Every test here may stop, kill, wipe or restart them; the shared servers are
never touched. Each test gets a fresh database on the private cluster (so a
restart's effects cannot leak between tests) and its own stack of gateway,
sweeper and worker processes on it (tests/stack.py).

A row of the matrix is recorded with ``record_fault``: the counts are asserted
(zero lost, duplicated, unexpected) and, when ``CHARTER_FAULT_REPORT`` names a
file, appended to it as one JSON line for docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from charter.db.migrate import upgrade
from charter.db.session import make_engine, session_factory
from charter.key_issuing import ensure_project, issue_key
from charter.settings import get_settings
from tests.servers import PrivatePostgres, PrivateRedis
from tests.stack import DEAD_BROKER, SECRET, Stack, base_settings


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres().init()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.destroy()


@pytest.fixture
def fault_database(private_postgres: PrivatePostgres) -> Iterator[str]:
    """A migrated database of this test's own on the private cluster."""
    name = f"fault_{secrets.token_hex(4)}"
    admin = create_engine(private_postgres.url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    finally:
        admin.dispose()
    url = private_postgres.database_url(name)
    upgrade(url)
    yield url


@pytest.fixture
def fault_db(fault_database: str) -> Iterator[Engine]:
    engine = make_engine(fault_database)
    yield engine
    engine.dispose()


@pytest.fixture
def fault_key(fault_db: Engine) -> str:
    with session_factory(fault_db)() as session, session.begin():
        project = ensure_project(session, "faults")
        _, key = issue_key(session, project.id, ["admin"], SECRET, name="faults")
    return key


@pytest.fixture(autouse=True)
def hostile_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As in the end-to-end tests: workers must run on the settings they were given."""
    monkeypatch.setenv("CHARTER_BROKER_URL", DEAD_BROKER)
    monkeypatch.setenv("CHARTER_DATABASE_URL", "sqlite:////nonexistent/charter.db")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def make_fault_stack(
    tmp_path: Path,
    fault_database: str,
    fault_db: Engine,
    fault_key: str,
    private_redis: PrivateRedis,
    private_postgres: PrivatePostgres,
) -> Iterator[Callable[..., Stack]]:
    """Opens stacks on the private servers; kills what they started at the end and
    prints the logs (pytest shows them when the test failed)."""
    opened: list[Stack] = []

    def make(*, sweeper: bool = True, **overrides: Any) -> Stack:
        settings = base_settings(
            tmp_path / f"stack{len(opened)}", fault_database, private_redis.url, **overrides
        )
        stack = Stack(settings, fault_key, fault_db, tmp_path)
        opened.append(stack)
        return stack.open(sweeper=sweeper)

    yield make
    for stack in reversed(opened):
        print(stack.tails())
        stack.close()
    print(private_postgres.tail())


def record_fault(
    fault: str, tally: dict[str, Any], *, recover_seconds: float | None, stack: str, **extra: Any
) -> None:
    """Assert a matrix row's pass criterion and append it to the report, if one is asked for."""
    row = {
        "fault": fault,
        "stack": stack,
        **tally,
        "recover_seconds": None if recover_seconds is None else round(recover_seconds, 2),
        **extra,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report = os.environ.get("CHARTER_FAULT_REPORT")
    if report:
        with Path(report).open("a") as out:
            out.write(json.dumps(row) + "\n")
    print(f"fault matrix: {json.dumps(row)}")
    assert (tally["lost"], tally["duplicated"], tally["unexpected"]) == (0, 0, 0), row
