"""approval links name their approval request: one use per approver and request

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows keep NULL: links minted before this are refused anyway, and NULLs never collide.
    with op.batch_alter_table("approval_link_uses") as batch:
        batch.add_column(sa.Column("approval_id", sa.String(128), nullable=True))
    op.create_index("ux_approval_link_uses_request_approver", "approval_link_uses", ["approval_id", "approver"],
                    unique=True)


def downgrade() -> None:
    op.drop_index("ux_approval_link_uses_request_approver", table_name="approval_link_uses")
    with op.batch_alter_table("approval_link_uses") as batch:
        batch.drop_column("approval_id")
