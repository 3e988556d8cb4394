"""the inbox's server-side sign-in sessions

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

from followthrough.db.tables import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbox_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_inbox_sessions_key_id", "inbox_sessions", ["key_id"])
    op.create_index("ix_inbox_sessions_expires_at", "inbox_sessions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("inbox_sessions")
