"""subtasks: a task's parent, its place among the parent's subtasks, and a parent's progress

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No foreign key on parent_id: a subtask's first mirror write may arrive before its parent's row.
    op.add_column("tasks", sa.Column("parent_id", sa.String(36), nullable=True))
    op.add_column("tasks", sa.Column("subtask_index", sa.Integer(), nullable=True))
    op.add_column("tasks", sa.Column("progress", sa.JSON(), nullable=True))
    op.create_index("ix_tasks_parent_id", "tasks", ["parent_id"])


def downgrade() -> None:
    op.drop_index("ix_tasks_parent_id", table_name="tasks")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("progress")
        batch.drop_column("subtask_index")
        batch.drop_column("parent_id")
