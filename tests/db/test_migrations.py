"""The migrations round-trip and match the ORM models, on SQLite and PostgreSQL.

These run on their own fresh database (``empty_database_url``), never the
session's shared one; tests that need a pristine schema first downgrade to base.
"""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, MetaData, String, inspect, pool, text

from charter.db.migrate import alembic_config, downgrade, upgrade
from charter.db.models import Base
from charter.db.session import make_engine


def _tables(url: str) -> set[str]:
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _head(url: str) -> str:
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    assert head is not None
    return head


def _current(url: str) -> str | None:
    engine = make_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    url = empty_database_url
    model_tables = set(Base.metadata.tables)
    downgrade(url, "base")
    assert _tables(url) <= {"alembic_version"}

    upgrade(url)
    assert _tables(url) == model_tables | {"alembic_version"}
    assert _current(url) == _head(url)

    downgrade(url, "base")
    assert _tables(url) == {"alembic_version"}
    assert _current(url) is None

    upgrade(url, "head")
    assert _tables(url) == model_tables | {"alembic_version"}
    assert _current(url) == _head(url)

    upgrade(url, "head")  # already at head: a no-op, not an error
    assert _current(url) == _head(url)


def test_models_and_migrations_agree(empty_database_url: str) -> None:
    downgrade(empty_database_url, "base")
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
            # The comparison is not vacuous: a model change shows up in it.
            changed = MetaData()
            for table in Base.metadata.sorted_tables:
                table.to_metadata(changed)
            changed.tables["projects"].append_column(Column("extra", String(8)))
            changed.tables["jobs"].c.model.type = String(64)
            drift = compare_metadata(context, changed)
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations disagree; autogenerate would emit: {diff}"
    kinds = {entry[0] if isinstance(entry, tuple) else entry[0][0] for entry in drift}
    assert {"add_column", "modify_type"} <= kinds, drift


def test_migrated_schema_enforces_foreign_keys(empty_database_url: str) -> None:
    """SQLite only checks foreign keys with the pragma make_engine sets; both must refuse."""
    upgrade(empty_database_url)
    engine = make_engine(empty_database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            transaction = conn.begin()
            try:
                conn.execute(
                    text(
                        "INSERT INTO api_keys (id, project_id, name, prefix, key_hash, scopes,"
                        " created_at) VALUES ('k', 'no-such-project', '', 'p', 'h', '[]',"
                        " CURRENT_TIMESTAMP)"
                    )
                )
            except Exception as exc:
                assert "foreign" in str(exc).lower()
            else:
                raise AssertionError("a key for a missing project was accepted")
            finally:
                transaction.rollback()
    finally:
        engine.dispose()


def test_work_items_leave_room_for_hot_updates(empty_database_url: str) -> None:
    """PostgreSQL: the table the outbox marks row by row keeps free space per page, as the
    model declares (migration 0004); a downgrade resets it."""
    url = empty_database_url
    engine = make_engine(url, poolclass=pool.NullPool)
    if engine.dialect.name != "postgresql":
        engine.dispose()
        pytest.skip("SQLite has no fillfactor")

    def options() -> list[str] | None:
        with engine.connect() as conn:
            return conn.scalar(text("SELECT reloptions FROM pg_class WHERE relname = 'work_items'"))

    try:
        downgrade(url, "base")
        upgrade(url)
        assert options() == ["fillfactor=70"]
        assert Base.metadata.tables["work_items"].dialect_options["postgresql"]["with"] == {
            "fillfactor": 70
        }
        downgrade(url, "0003")
        assert options() is None
        upgrade(url)
        assert options() == ["fillfactor=70"]
    finally:
        engine.dispose()
