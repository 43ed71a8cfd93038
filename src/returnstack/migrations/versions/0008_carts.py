"""carts (Sailthru incomplete purchases); returns found by their event

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 20:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "carts",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("extid", sa.String(length=128), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("carted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_carts_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", "email", name=op.f("pk_carts")),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_returns_tenant_id_event_id", "returns", ["tenant_id", "event_id"])


def downgrade() -> None:
    op.drop_index("ix_returns_tenant_id_event_id", table_name="returns")
    op.drop_table("carts")
