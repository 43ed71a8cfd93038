"""product signals: per product, breakdowns, reasons and category rollups

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 17:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _units(*names: str) -> list[sa.Column[int]]:
    return [sa.Column(name, sa.BigInteger(), nullable=False) for name in names]


def upgrade() -> None:
    op.create_table(
        "product_signals",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("product_id", sa.String(length=128), nullable=False),
        sa.Column("category", sa.String(length=500), nullable=True),
        sa.Column("category_at", sa.DateTime(timezone=True), nullable=True),
        *_units("units_sold", "units_returned", "reported_units_sold", "reported_units_returned"),
        sa.Column("return_rate", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "product_id", name=op.f("pk_product_signals")),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_product_signals_tenant_id_category",
        "product_signals",
        ["tenant_id", "category", "product_id"],
    )
    op.create_table(
        "product_breakdowns",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("product_id", sa.String(length=128), nullable=False),
        sa.Column("variant_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("store_id", sa.String(length=128), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        *_units(
            "units_sold",
            "units_returned",
            "refunded",
            "reported_units_sold",
            "reported_units_returned",
            "reported_refunded",
        ),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "product_id",
            "variant_id",
            "channel",
            "store_id",
            "currency",
            name=op.f("pk_product_breakdowns"),
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "product_reasons",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("product_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        *_units("units", "reported_units"),
        sa.PrimaryKeyConstraint(
            "tenant_id", "product_id", "reason", name=op.f("pk_product_reasons")
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "category_signals",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("path", sa.String(length=500), nullable=False),
        *_units("units_sold", "units_returned"),
        sa.PrimaryKeyConstraint("tenant_id", "path", name=op.f("pk_category_signals")),
        sqlite_with_rowid=False,
    )
    # Reports select the orders of a date range.
    op.create_index("ix_orders_tenant_id_placed_at", "orders", ["tenant_id", "placed_at"])
    # Products of the facts recorded before this migration: `returnstack profiles rebuild`
    # computes their signals (the tables start empty).


def downgrade() -> None:
    op.drop_index("ix_orders_tenant_id_placed_at", table_name="orders")
    op.drop_table("category_signals")
    op.drop_table("product_reasons")
    op.drop_table("product_breakdowns")
    op.drop_index("ix_product_signals_tenant_id_category", table_name="product_signals")
    op.drop_table("product_signals")
