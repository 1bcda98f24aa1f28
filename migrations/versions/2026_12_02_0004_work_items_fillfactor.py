"""work items: leave room in each page so the outbox's mark is a HOT update

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

The outbox marks every item of a published chunk (``published_at``), a column no index
covers: with free space in the page, PostgreSQL rewrites the row in place (a HOT update)
and touches none of the table's four indexes. Full pages (fillfactor 100, the default)
forced a new row version elsewhere plus an entry in every index: the mark took 3-5x longer
(docs/BENCHMARKS.md, the outbox). Applies to pages written from now on; SQLite has no
such setting.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILLFACTOR = 70


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE work_items SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE work_items RESET (fillfactor)")
