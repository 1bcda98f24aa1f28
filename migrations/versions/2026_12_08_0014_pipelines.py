"""pipelines (the whole recipe as one resumable object)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08

Pipelines and the attempts of their stages: each attempt records the exact body it
was submitted with and the job, dataset version, training run or policy evaluation it
made. Additive: new tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
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
        "pipelines",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("advanced_at", Timestamp, nullable=True),
        _fk("pipelines", "project_id", "projects.id", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipelines")),
    )
    op.create_index(op.f("ix_pipelines_project_id"), "pipelines", ["project_id", "created_at"])
    op.create_index(op.f("ix_pipelines_state"), "pipelines", ["state"])
    op.create_table(
        "pipeline_stages",
        sa.Column("pipeline_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("inputs", Json, nullable=False),
        sa.Column("output", sa.String(200), nullable=True),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("dataset_version_id", sa.String(32), nullable=True),
        sa.Column("run_id", sa.String(32), nullable=True),
        sa.Column("policy_eval_id", sa.String(32), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp, nullable=True),
        _fk("pipeline_stages", "pipeline_id", "pipelines.id", "CASCADE"),
        _fk("pipeline_stages", "job_id", "jobs.id", "SET NULL"),
        _fk("pipeline_stages", "dataset_version_id", "dataset_versions.id", "SET NULL"),
        _fk("pipeline_stages", "run_id", "training_runs.id", "SET NULL"),
        _fk("pipeline_stages", "policy_eval_id", "policy_evals.id", "SET NULL"),
        sa.PrimaryKeyConstraint("pipeline_id", "name", "attempt", name=op.f("pk_pipeline_stages")),
    )


def downgrade() -> None:
    op.drop_table("pipeline_stages")
    op.drop_index(op.f("ix_pipelines_state"), table_name="pipelines")
    op.drop_index(op.f("ix_pipelines_project_id"), table_name="pipelines")
    op.drop_table("pipelines")
