"""inbound events (POST /events): kept once per tenant and id with their first answer, found by subject for a
task's stop_on; a definition's event trigger

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from followthrough.db.tables import UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "inbound_events",
        sa.Column("tenant_id", sa.String(128), primary_key=True),
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("subject_ref_type", sa.String(64), nullable=True),
        sa.Column("subject_ref_id", sa.String(256), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(160), nullable=False),
        sa.Column("received_by", sa.String(128), nullable=True),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=True),
    )
    op.create_index("ix_inbound_events_subject", "inbound_events",
                    ["tenant_id", "subject_ref_type", "subject_ref_id", "type", "received_at"])
    with op.batch_alter_table("task_definitions") as batch:
        batch.add_column(sa.Column("trigger_event", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("task_definitions") as batch:
        batch.drop_column("trigger_event")
    op.drop_index("ix_inbound_events_subject", table_name="inbound_events")
    op.drop_table("inbound_events")
