"""returns: the list's index holds its whole order (created_at, then id), so a page of a
large tenant is read in index order whatever the planner's statistics say; with them,
SQLite scanned and sorted all the tenant's returns (the old index left the id to a sort)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 03:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("returns", schema=None) as batch_op:
        batch_op.drop_index("ix_returns_tenant_id_created_at")
        batch_op.create_index(
            "ix_returns_tenant_id_created_at_id", ["tenant_id", "created_at", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("returns", schema=None) as batch_op:
        batch_op.drop_index("ix_returns_tenant_id_created_at_id")
        batch_op.create_index(
            "ix_returns_tenant_id_created_at", ["tenant_id", "created_at"], unique=False
        )
