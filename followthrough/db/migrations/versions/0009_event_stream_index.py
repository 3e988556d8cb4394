"""an index on task_events.recorded_at, the order the live streams read new events in

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_task_events_recorded", "task_events", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_task_events_recorded", table_name="task_events")
