"""indexes for the list queries at scale: newest across tenants, a tenant's tasks by type or owner,
a status across tenants, and a tenant's approval queue (measured in bench/scale.py)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-22
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_tasks_created": ("tasks", ["created_at", "id"]),
    "ix_tasks_status_created": ("tasks", ["status", "created_at"]),
    "ix_tasks_tenant_type_created": ("tasks", ["tenant_id", "type", "created_at"]),
    "ix_tasks_tenant_owner_created": ("tasks", ["tenant_id", "owner_id", "created_at"]),
    "ix_approvals_tenant_status_requested": ("approvals", ["tenant_id", "status", "requested_at"]),
}


def upgrade() -> None:
    for name, (table, columns) in INDEXES.items():
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, (table, _) in INDEXES.items():
        op.drop_index(name, table_name=table)
