"""feedback templates of a project's own

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

A project's feedback templates, immutable once stored: each push of a changed template is
a new version with its sha256. Labels name the template in ``template_version``
(``<module version>/<name>@<version>``), which may now run past 32 characters. Additive: a
new table and a longer column.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "feedback_templates",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", Json, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name=op.f("fk_feedback_templates_project_id_projects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feedback_templates")),
        sa.UniqueConstraint(
            "project_id",
            "name",
            "version",
            name=op.f("uq_feedback_templates_project_id_name_version"),
        ),
    )
    with op.batch_alter_table("labels") as batch:
        batch.alter_column(
            "template_version", existing_type=sa.String(32), type_=sa.String(80), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("labels") as batch:
        batch.alter_column(
            "template_version", existing_type=sa.String(80), type_=sa.String(32), nullable=False
        )
    op.drop_table("feedback_templates")
