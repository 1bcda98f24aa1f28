"""judge evaluation (gold sets, evaluation runs) and critique templates

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

Gold sets (immutable versions of comparisons with a known answer, their rows stored as a
prompt batch), evaluation runs and the jobs that score them; a project's own critique
templates. Labels name a critique template too in ``template_version``, which may now run
past 80 characters. Additive: new tables and a longer column.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
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
        "gold_sets",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(32), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("categories", Json, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        _fk("gold_sets", "project_id", "projects.id", "CASCADE"),
        _fk("gold_sets", "batch_id", "prompt_batches.id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gold_sets")),
        sa.UniqueConstraint(
            "project_id", "name", "version", name=op.f("uq_gold_sets_project_id_name_version")
        ),
    )
    op.create_table(
        "gold_items",
        sa.Column("gold_set_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("prompt_id", BigId, nullable=False),
        sa.Column("answer", sa.String(1), nullable=False),
        sa.Column("p_gold", sa.Float(), nullable=True),
        sa.Column("category", sa.String(64), nullable=True),
        _fk("gold_items", "gold_set_id", "gold_sets.id", "CASCADE"),
        _fk("gold_items", "prompt_id", "prompts.id"),
        sa.PrimaryKeyConstraint("gold_set_id", "position", name=op.f("pk_gold_items")),
    )
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("gold_set_id", sa.String(32), nullable=False),
        sa.Column("configs", Json, nullable=False),
        sa.Column("injection", Json, nullable=True),
        sa.Column("variants_batch_id", sa.String(32), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        _fk("eval_runs", "project_id", "projects.id", "CASCADE"),
        _fk("eval_runs", "gold_set_id", "gold_sets.id"),
        _fk("eval_runs", "variants_batch_id", "prompt_batches.id"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_eval_runs")),
    )
    op.create_index(op.f("ix_eval_runs_project_id"), "eval_runs", ["project_id", "created_at"])
    op.create_table(
        "eval_jobs",
        sa.Column("eval_run_id", sa.String(32), nullable=False),
        sa.Column("config_index", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(24), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        _fk("eval_jobs", "eval_run_id", "eval_runs.id", "CASCADE"),
        _fk("eval_jobs", "job_id", "jobs.id", "CASCADE"),
        sa.PrimaryKeyConstraint(
            "eval_run_id", "config_index", "variant", name=op.f("pk_eval_jobs")
        ),
        sa.UniqueConstraint("job_id", name=op.f("uq_eval_jobs_job_id")),
    )

    op.create_table(
        "critique_templates",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        _fk("critique_templates", "project_id", "projects.id", "CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_critique_templates")),
        sa.UniqueConstraint(
            "project_id",
            "name",
            "version",
            name=op.f("uq_critique_templates_project_id_name_version"),
        ),
    )
    with op.batch_alter_table("labels") as batch:
        batch.alter_column(
            "template_version", existing_type=sa.String(80), type_=sa.String(128), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.alter_column(
            "template_version", existing_type=sa.String(128), type_=sa.String(80), nullable=False
        )
    op.drop_table("critique_templates")
    op.drop_table("eval_jobs")
    op.drop_index(op.f("ix_eval_runs_project_id"), table_name="eval_runs")
    op.drop_table("eval_runs")
    op.drop_table("gold_items")
    op.drop_table("gold_sets")
