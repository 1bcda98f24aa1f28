"""Shared fixtures: a migrated database per backend, a clean schema per test, the gateway.

``database_url`` is parametrised over ``sqlite`` and ``postgres``, so every test
that (indirectly) uses it runs on both. The PostgreSQL server defaults to the
local one; set ``CHARTER_TEST_POSTGRES_URL`` to point elsewhere. Without a
server the postgres variants are skipped, except under ``CI``, where they fail.

Every database is private to the pytest process (a random name or a file in the
process's own temporary directory), so the suite is safe under pytest-xdist.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url

from charter.db.migrate import upgrade
from charter.db.models import Base
from charter.db.session import make_engine, session_factory
from charter.key_issuing import ensure_project, issue_key
from charter.settings import Settings
from services.gateway.app import create_app

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ("sqlite", "postgres")
ROOT = Path(__file__).resolve().parent.parent
CONSTITUTIONS_DIR = ROOT / "constitutions"
EXAMPLE_PROMPTS = ROOT / "examples" / "prompts.jsonl"
TEST_SECRET = "test-secret-for-pytest"

# A constitution whose metadata nests aliases eight levels deep: yaml.safe_load
# expands it to 10**8 strings (about a minute of CPU and gigabytes of memory).
ALIAS_BOMB = b"""name: bomb
comparison_principles:
  - id: better
    text: Which response is better?
metadata:
  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]
  b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
  c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
  d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
  e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
  f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]
  g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]
  h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]
  i: [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgres_only: run only the postgres variant of a database-parametrised test"
    )


def _backend_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for name in ("database_url", "empty_database_url"):
        if name in callspec.params:
            return str(callspec.params[name])
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tag postgres variants with the ``postgres`` marker (``-m 'not postgres'`` drops
    them) and skip the sqlite variants of ``postgres_only`` tests."""
    for item in items:
        backend = _backend_of(item)
        if backend == "postgres":
            item.add_marker(pytest.mark.postgres)
        elif backend == "sqlite" and item.get_closest_marker("postgres_only"):
            item.add_marker(pytest.mark.skip(reason="PostgreSQL-only behaviour"))


# --------------------------------------------------------------------------- databases


def _render(url: URL) -> str:
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_server() -> URL:
    """The server URL (its maintenance database), checked once per process."""
    url = make_url(os.environ.get("CHARTER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    probe = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with probe.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        reason = (
            f"PostgreSQL is unreachable at {url.render_as_string()} "
            f"({type(exc).__name__}); set CHARTER_TEST_POSTGRES_URL to run the postgres tests"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI is set, so this is an error, not a skip)", pytrace=False)
        pytest.skip(reason)
    finally:
        probe.dispose()
    return url


class DatabaseFactory:
    """Creates empty databases (sqlite files or postgres databases) and drops them."""

    def __init__(self, tmp_dir: Path) -> None:
        self._tmp_dir = tmp_dir
        self._created: list[tuple[URL, str]] = []

    def create(self, request: pytest.FixtureRequest) -> str:
        """A new database for the backend named by ``request.param``."""
        suffix = secrets.token_hex(6)
        if request.param == "sqlite":
            return f"sqlite:///{self._tmp_dir / f'charter-{suffix}.db'}"
        server: URL = request.getfixturevalue("postgres_server")
        name = f"charter_t_{suffix}"
        admin = create_engine(server, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        finally:
            admin.dispose()
        self._created.append((server, name))
        return _render(server.set(database=name))

    def drop(self, url: str) -> None:
        parsed = make_url(url)
        for server, name in list(self._created):
            if name == parsed.database:
                self._created.remove((server, name))
                admin = create_engine(server, isolation_level="AUTOCOMMIT")
                try:
                    with admin.connect() as conn:
                        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                finally:
                    admin.dispose()

    def drop_all(self) -> None:
        for server, name in list(self._created):
            self.drop(_render(server.set(database=name)))


@pytest.fixture(scope="session")
def database_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("databases"))
    yield factory
    factory.drop_all()


@pytest.fixture(scope="session", params=BACKENDS, ids=BACKENDS)
def database_url(request: pytest.FixtureRequest, database_factory: DatabaseFactory) -> str:
    """A migrated database shared by the whole session (tables emptied per test)."""
    url = database_factory.create(request)
    upgrade(url)
    return url


@pytest.fixture(scope="module", params=BACKENDS, ids=BACKENDS)
def empty_database_url(
    request: pytest.FixtureRequest, database_factory: DatabaseFactory
) -> Iterator[str]:
    """A brand-new, unmigrated database of each backend, never the shared one.

    One per test module (creating and dropping PostgreSQL databases is slow): a
    test that needs a pristine schema starts with ``downgrade(url, "base")``.
    """
    url = database_factory.create(request)
    yield url
    database_factory.drop(url)


@pytest.fixture
def backend(database_url: str) -> str:
    return make_url(database_url).get_backend_name()


@pytest.fixture
def postgres_only(backend: str) -> None:
    """Request it (or use ``@pytest.mark.postgres_only``) to skip the sqlite variant."""
    if backend != "postgresql":
        pytest.skip("PostgreSQL-only behaviour")


@pytest.fixture(scope="session")
def _shared_engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _empty_tables(engine: Engine) -> None:
    # DELETE, children first: on PostgreSQL it is far faster than TRUNCATE for the
    # few rows a test leaves behind (TRUNCATE swaps every table's files).
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def engine(_shared_engine: Engine) -> Engine:
    """The session's engine, with every table emptied before the test."""
    _empty_tables(_shared_engine)
    return _shared_engine


# --------------------------------------------------------------------------- gateway


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "_env_file": None,  # a developer's .env must not leak into the tests
            "env": "test",
            "data_dir": tmp_path,
            "database_url": database_url,
            "broker_url": None,
            "secret_key": TEST_SECRET,
            "models_dir": tmp_path / "models",
            "artifacts_dir": tmp_path / "artifacts",
            # The models this test deployment serves (jobs for any other model are refused).
            "worker_models": ["smollm2", "smollm2-135m", "m", "tiny-model"],
            # Tests advance policy evaluations by hand (Advancer.advance_all).
            "policy_eval_advance_seconds": 3600.0,
            "pipeline_advance_seconds": 3600.0,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def app(settings: Settings, engine: Engine) -> FastAPI:
    return create_app(settings, engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def make_client(
    make_settings: Callable[..., Settings], engine: Engine
) -> Iterator[Callable[..., TestClient]]:
    """A client for an app built with overridden settings (and optionally another engine)."""
    opened: list[TestClient] = []

    def make(*, engine_override: Engine | None = None, **overrides: Any) -> TestClient:
        test_client = TestClient(create_app(make_settings(**overrides), engine_override or engine))
        test_client.__enter__()
        opened.append(test_client)
        return test_client

    yield make
    for test_client in opened:
        test_client.__exit__(None, None, None)


# --------------------------------------------------------------------------- projects and keys


@dataclass(frozen=True)
class IssuedKey:
    id: str
    project_id: str
    project: str
    key: str
    scopes: tuple[str, ...] = field(default=())

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.key}


@pytest.fixture
def issue(engine: Engine, settings: Settings) -> Callable[..., IssuedKey]:
    """Create (or reuse) a project and give it a key with the given scopes, committed."""
    sessions = session_factory(engine)

    def make(
        project: str = "alpha",
        scopes: tuple[str, ...] | list[str] = ("admin",),
        *,
        name: str = "",
        expires_at: datetime | None = None,
    ) -> IssuedKey:
        with sessions() as session, session.begin():
            row = ensure_project(session, project)
            key_row, plaintext = issue_key(
                session, row.id, list(scopes), settings.secret_key, name=name, expires_at=expires_at
            )
            return IssuedKey(key_row.id, row.id, project, plaintext, tuple(scopes))

    return make


@pytest.fixture
def make_headers(issue: Callable[..., IssuedKey]) -> Callable[..., dict[str, str]]:
    """``make_headers("alpha", "read")`` -> ``{"X-API-Key": ...}`` for a new read-only key."""

    def make(project: str = "alpha", *scopes: str, **kwargs: Any) -> dict[str, str]:
        return issue(project, scopes or ("admin",), **kwargs).headers

    return make


@pytest.fixture
def admin_headers(make_headers: Callable[..., dict[str, str]]) -> dict[str, str]:
    return make_headers("alpha", "admin")


# --------------------------------------------------------------------------- shared content


@pytest.fixture(scope="session")
def default_yaml() -> bytes:
    return (CONSTITUTIONS_DIR / "default.yaml").read_bytes()


@pytest.fixture(scope="session")
def default_document(default_yaml: bytes) -> dict[str, Any]:
    document = yaml.safe_load(default_yaml)
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="session")
def example_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLE_PROMPTS.read_text().splitlines() if line.strip()]


class Api:
    """Small helpers over the client for set-up steps; each asserts success."""

    def __init__(self, client: TestClient, default_document: dict[str, Any]) -> None:
        self.client = client
        self.default_document = default_document

    def push_default(self, headers: dict[str, str]) -> dict[str, Any]:
        """constitutions/default.yaml, sent as JSON (parsing YAML is the slow part)."""
        return self.push(headers, self.default_document)

    def push(self, headers: dict[str, str], document: dict[str, Any]) -> dict[str, Any]:
        response = self.client.post("/v1/constitutions", json=document, headers=headers)
        assert response.status_code in (200, 201), response.text
        return response.json()

    def create_batch(
        self, headers: dict[str, str], rows: list[dict[str, Any]], name: str = "batch"
    ) -> dict[str, Any]:
        response = self.client.post(
            "/v1/batches", json={"name": name, "rows": rows}, headers=headers
        )
        assert response.status_code == 201, response.text
        return response.json()

    def submit(self, headers: dict[str, str], **body: Any) -> dict[str, Any]:
        body.setdefault("type", "sl_cai")
        body.setdefault("constitution", "default")
        body.setdefault("model", "smollm2-135m")
        response = self.client.post("/v1/jobs", json=body, headers=headers)
        assert response.status_code == 202, response.text
        return response.json()


@pytest.fixture
def api(client: TestClient, default_document: dict[str, Any]) -> Api:
    return Api(client, default_document)
