"""dataset freezing: versions frozen in the background, with state, progress and a lease

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

Existing versions were frozen in one request: they are ``ready``, all rows done.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch_op:
        batch_op.add_column(
            sa.Column("state", sa.String(length=16), nullable=False, server_default="ready")
        )
        batch_op.add_column(
            sa.Column("rows_total", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("rows_done", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("freeze_cursor", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("freeze_max_label_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_dataset_versions_state", ["state"], unique=False)
    op.execute(
        "UPDATE dataset_versions SET rows_total = row_count, rows_done = row_count, "
        "ready_at = created_at"
    )


def downgrade() -> None:
    # Versions that never finished freezing have partial rows: they cannot be kept.
    op.execute(
        "DELETE FROM dataset_rows WHERE version_id IN "
        "(SELECT id FROM dataset_versions WHERE state <> 'ready')"
    )
    op.execute("DELETE FROM dataset_versions WHERE state <> 'ready'")
    with op.batch_alter_table("dataset_versions") as batch_op:
        batch_op.drop_index("ix_dataset_versions_state")
        for column in (
            "ready_at",
            "error",
            "lease_expires_at",
            "lease_owner",
            "freeze_max_label_id",
            "freeze_cursor",
            "rows_done",
            "rows_total",
            "state",
        ):
            batch_op.drop_column(column)
