"""engine statistics on worker heartbeats

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

Each worker's heartbeat writes what its engine did since the worker started (calls,
seconds, the sum of batch sizes, tokens in and out) and the chunk it is running, so the
gateway's ``/metrics`` exports them for a fleet of worker processes without scraping
each one. Additive: the counters default to 0, ``current_chunk`` is nullable.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = ("engine_calls", "batch_items", "tokens_in", "tokens_out")


def upgrade() -> None:
    op.add_column("workers", sa.Column("current_chunk", sa.String(64), nullable=True))
    for name in COUNTERS:
        op.add_column(
            "workers", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
        )
    op.add_column(
        "workers", sa.Column("engine_seconds", sa.Float(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("engine_seconds")
        for name in reversed(COUNTERS):
            batch.drop_column(name)
        batch.drop_column("current_chunk")
