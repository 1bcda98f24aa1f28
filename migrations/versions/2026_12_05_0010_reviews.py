"""human review of AI labels

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05

Reviewers open queues (a seeded sample of a job's labels) and give verdicts. A
verdict lives in its own table, one row per reviewer and label, and never touches
the label. Additive: three new tables.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "review_queues",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("strategy", sa.String(16), nullable=False),
        sa.Column("by", sa.String(32), nullable=True),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("requested_size", sa.Integer(), nullable=False),
        sa.Column("created_by_key_id", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("target_reached_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by_key_id"],
            ["api_keys.id"],
            name=op.f("fk_review_queues_created_by_key_id_api_keys"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_review_queues_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_review_queues_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_queues")),
    )
    op.create_index(op.f("ix_review_queues_job_id"), "review_queues", ["job_id"])
    op.create_index(
        op.f("ix_review_queues_project_id"), "review_queues", ["project_id", "created_at"]
    )
    op.create_table(
        "review_queue_items",
        sa.Column("queue_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("label_id", BigId, nullable=False),
        sa.Column("stratum", sa.String(256), nullable=True),
        sa.ForeignKeyConstraint(
            ["label_id"],
            ["labels.id"],
            name=op.f("fk_review_queue_items_label_id_labels"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["review_queues.id"],
            name=op.f("fk_review_queue_items_queue_id_review_queues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("queue_id", "position", name=op.f("pk_review_queue_items")),
        sa.UniqueConstraint(
            "queue_id", "label_id", name=op.f("uq_review_queue_items_queue_id_label_id")
        ),
    )
    op.create_index(op.f("ix_review_queue_items_label_id"), "review_queue_items", ["label_id"])
    op.create_table(
        "review_verdicts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("label_id", BigId, nullable=False),
        sa.Column("queue_id", sa.String(32), nullable=True),
        sa.Column("api_key_id", sa.String(32), nullable=False),
        sa.Column("key_prefix", sa.String(32), nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("choice", sa.String(8), nullable=True),
        sa.Column("satisfies", sa.Boolean(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("agrees", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("history", Json, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_review_verdicts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["label_id"],
            ["labels.id"],
            name=op.f("fk_review_verdicts_label_id_labels"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_review_verdicts_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["review_queues.id"],
            name=op.f("fk_review_verdicts_queue_id_review_queues"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_verdicts")),
        sa.UniqueConstraint(
            "label_id",
            "api_key_id",
            "reviewer",
            name=op.f("uq_review_verdicts_label_id_api_key_id_reviewer"),
        ),
    )
    op.create_index(op.f("ix_review_verdicts_job_id"), "review_verdicts", ["job_id", "id"])
    op.create_index(op.f("ix_review_verdicts_project_id"), "review_verdicts", ["project_id", "id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_review_verdicts_project_id"), table_name="review_verdicts")
    op.drop_index(op.f("ix_review_verdicts_job_id"), table_name="review_verdicts")
    op.drop_table("review_verdicts")
    op.drop_index(op.f("ix_review_queue_items_label_id"), table_name="review_queue_items")
    op.drop_table("review_queue_items")
    op.drop_index(op.f("ix_review_queues_project_id"), table_name="review_queues")
    op.drop_index(op.f("ix_review_queues_job_id"), table_name="review_queues")
    op.drop_table("review_queues")
