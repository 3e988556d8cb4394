"""task definitions, and where each task came from

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

from followthrough.db.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "task_definitions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("live_name", sa.String(200)),
        sa.Column("description", sa.Text()),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("mode", sa.String(32)),
        sa.Column("title", sa.Text()),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("variables", sa.JSON(), nullable=False),
        sa.Column("defaults", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("tags_key", sa.Text(), nullable=False),
        sa.Column("cron", sa.String(200)),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("schedule_state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(128)),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("deleted_at", UTCDateTime()),
        sa.UniqueConstraint("tenant_id", "live_name", name="uq_task_definitions_tenant_live_name"),
    )
    op.create_index("ix_task_definitions_tenant_id", "task_definitions", ["tenant_id"])
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("trigger", sa.String(16), nullable=False, server_default="api"))
        batch.add_column(sa.Column("definition_id", sa.String(36)))
        batch.add_column(sa.Column("schedule_run_id", sa.String(255)))
    op.create_index("ix_tasks_definition_id", "tasks", ["definition_id"])


def downgrade() -> None:
    op.drop_index("ix_tasks_definition_id", "tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("schedule_run_id")
        batch.drop_column("definition_id")
        batch.drop_column("trigger")
    op.drop_table("task_definitions")
