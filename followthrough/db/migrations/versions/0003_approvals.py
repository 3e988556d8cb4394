"""approvals and their decisions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from followthrough.db.tables import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("task_id", sa.String(36), sa.ForeignKey("tasks.id"), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("run_number", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("approvers", sa.JSON(), nullable=False),
        sa.Column("approvers_key", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(200)),
        sa.Column("flags", sa.JSON(), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("deadline", UTCDateTime()),
        sa.Column("decided_at", UTCDateTime()),
    )
    op.create_index("ix_approvals_task_id", "approvals", ["task_id"])
    op.create_index("ix_approvals_status_requested", "approvals", ["status", "requested_at"])
    op.create_table(
        "approval_decisions",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("approval_id", sa.String(128), sa.ForeignKey("approvals.id"), nullable=False),
        sa.Column("actor_id", sa.String(128)),
        sa.Column("actor_type", sa.String(32), nullable=False),
        sa.Column("decision", sa.String(32), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("edited", sa.JSON()),
        sa.Column("diff", sa.Text()),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_approval_decisions_approval_id", "approval_decisions", ["approval_id"])


def downgrade() -> None:
    op.drop_table("approval_decisions")
    op.drop_table("approvals")
