"""the worker's sweep re-sends notifications the workflow could not deliver: attempts, the last error, backoff,
a claim, and giving up, on each outbox row

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from followthrough.db.tables import UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

COLUMNS = ("attempts", "last_error", "next_attempt_at", "claimed_until", "given_up_at")


def upgrade() -> None:
    with op.batch_alter_table("notification_outbox") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("next_attempt_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("claimed_until", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("given_up_at", UTCDateTime(), nullable=True))
    op.create_index("ix_notification_outbox_owed", "notification_outbox",
                    ["delivered_at", "given_up_at", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_notification_outbox_owed", table_name="notification_outbox")
    with op.batch_alter_table("notification_outbox") as batch:
        for column in COLUMNS:
            batch.drop_column(column)
