"""approvals recorded before approver ids were checked get their approvers key rebuilt, so an id holding the
separator ("bob|alice") no longer shows the request in alice's queue

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

from followthrough.db.approval_records import approvers_key

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BATCH = 1000


def upgrade() -> None:
    approvals = sa.table("approvals", sa.column("id", sa.String), sa.column("approvers", sa.JSON),
                         sa.column("approver_roles", sa.JSON), sa.column("approvers_key", sa.Text))
    connection = op.get_bind()
    after = ""
    while True:  # in id order, a batch at a time: a large table is never held in memory
        rows = connection.execute(sa.select(approvals).where(approvals.c.id > after, approvals.c.approvers_key != "")
                                  .order_by(approvals.c.id).limit(BATCH)).all()
        if not rows:
            return
        for row in rows:
            key = approvers_key(list(row.approvers or []), list(row.approver_roles or []))
            if key != row.approvers_key:
                connection.execute(sa.update(approvals).where(approvals.c.id == row.id).values(approvers_key=key))
        after = rows[-1].id


def downgrade() -> None:
    pass  # the rebuilt keys are what the older code would match too, for every valid id
