"""policy evaluation (generate per policy, compare pairwise per judge, Elo)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

Policy evaluations and the jobs they run: each policy's generate job and each judge's
compare job over the pairs batch built from the generations. Additive: new tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def _fk(
    table: str, column: str, target: str, ondelete: str | None = None
) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column],
        [target],
        name=op.f(f"fk_{table}_{column}_{target.split('.')[0]}"),
        ondelete=ondelete,
    )


def upgrade() -> None:
    op.create_table(
        "policy_evals",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("batch_id", sa.String(32), nullable=False),
        sa.Column("policies", Json, nullable=False),
        sa.Column("judges", Json, nullable=False),
        sa.Column("anchor", sa.String(40), nullable=False),
        sa.Column("plot", Json, nullable=True),
        sa.Column("bootstrap", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=True),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("pairs_batch_id", sa.String(32), nullable=True),
        sa.Column("slots", Json, nullable=True),
        sa.Column("comparisons", sa.Integer(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("advanced_at", Timestamp, nullable=True),
        _fk("policy_evals", "project_id", "projects.id", "CASCADE"),
        _fk("policy_evals", "batch_id", "prompt_batches.id"),
        _fk("policy_evals", "pairs_batch_id", "prompt_batches.id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_evals")),
    )
    op.create_index(
        op.f("ix_policy_evals_project_id"), "policy_evals", ["project_id", "created_at"]
    )
    op.create_index(op.f("ix_policy_evals_stage"), "policy_evals", ["stage"])
    op.create_table(
        "policy_eval_jobs",
        sa.Column("policy_eval_id", sa.String(32), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        _fk("policy_eval_jobs", "policy_eval_id", "policy_evals.id", "CASCADE"),
        _fk("policy_eval_jobs", "job_id", "jobs.id", "CASCADE"),
        sa.PrimaryKeyConstraint(
            "policy_eval_id", "role", "index", name=op.f("pk_policy_eval_jobs")
        ),
        sa.UniqueConstraint("job_id", name=op.f("uq_policy_eval_jobs_job_id")),
    )


def downgrade() -> None:
    op.drop_table("policy_eval_jobs")
    op.drop_index(op.f("ix_policy_evals_stage"), table_name="policy_evals")
    op.drop_index(op.f("ix_policy_evals_project_id"), table_name="policy_evals")
    op.drop_table("policy_evals")
