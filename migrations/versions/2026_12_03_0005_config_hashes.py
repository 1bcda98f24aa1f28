"""configuration hashes on labels and training runs; labels.sampling is labels.job_params

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

Every label records the hash of the engine configuration that produced it and of the
sampling parameters it was generated with, beside the model revision and template hash;
``labels.sampling`` always held all of the job's parameters and is renamed to say so.
A training run records the hash of the normalised config it was created with and the
hash its trainer reports having trained with. All added columns are nullable: rows
written before this revision have no hash.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # RENAME COLUMN is plain SQL on PostgreSQL and on SQLite >= 3.25 (no table rebuild).
    op.execute("ALTER TABLE labels RENAME COLUMN sampling TO job_params")
    op.add_column("labels", sa.Column("engine_config_hash", sa.String(16), nullable=True))
    op.add_column("labels", sa.Column("sampling_hash", sa.String(16), nullable=True))
    op.add_column("training_runs", sa.Column("config_hash", sa.String(16), nullable=True))
    op.add_column("training_runs", sa.Column("trained_config_hash", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_runs") as batch:
        batch.drop_column("trained_config_hash")
        batch.drop_column("config_hash")
    with op.batch_alter_table("labels") as batch:
        batch.drop_column("sampling_hash")
        batch.drop_column("engine_config_hash")
    op.execute("ALTER TABLE labels RENAME COLUMN job_params TO sampling")
