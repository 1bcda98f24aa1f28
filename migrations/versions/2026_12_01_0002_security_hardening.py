"""security hardening: idempotency records bound to a key, with expiry; run lease tokens

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

Existing idempotency records are deleted rather than migrated: they are a replay
cache with no owning key, and records of key creations hold plaintext secrets.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DELETE FROM idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.add_column(sa.Column("api_key_id", sa.String(length=32), nullable=False))
        batch_op.add_column(sa.Column("redacted", sa.Boolean(), nullable=False))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False))
        batch_op.drop_constraint("uq_idempotency_keys_project_id_key", type_="unique")
        batch_op.create_index("ix_idempotency_keys_expires_at", ["expires_at"], unique=False)
        batch_op.create_unique_constraint(
            "uq_idempotency_keys_api_key_id_key", ["api_key_id", "key"]
        )
        batch_op.create_foreign_key(
            "fk_idempotency_keys_api_key_id_api_keys",
            "api_keys",
            ["api_key_id"],
            ["id"],
            ondelete="CASCADE",
        )
    with op.batch_alter_table("training_runs") as batch_op:
        batch_op.add_column(sa.Column("lease_token_hash", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_runs") as batch_op:
        batch_op.drop_column("lease_token_hash")
    op.execute("DELETE FROM idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch_op:
        batch_op.drop_constraint("fk_idempotency_keys_api_key_id_api_keys", type_="foreignkey")
        batch_op.drop_constraint("uq_idempotency_keys_api_key_id_key", type_="unique")
        batch_op.drop_index("ix_idempotency_keys_expires_at")
        batch_op.create_unique_constraint(
            "uq_idempotency_keys_project_id_key", ["project_id", "key"]
        )
        batch_op.drop_column("expires_at")
        batch_op.drop_column("redacted")
        batch_op.drop_column("api_key_id")
