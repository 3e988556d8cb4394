"""single-use signed approval links

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

from followthrough.db.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "approval_link_uses",
        sa.Column("nonce", sa.String(64), primary_key=True),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("approver", sa.String(128), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("used_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_approval_link_uses_task_id", "approval_link_uses", ["task_id"])


def downgrade() -> None:
    op.drop_table("approval_link_uses")
