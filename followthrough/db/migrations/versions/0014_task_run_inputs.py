"""tasks keep their last run's input, so a failed task can be retried after Temporal has dropped its history

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows keep NULL: their retry reads the input from the run's history while Temporal has it.
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("run_input", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("run_input")
