"""product signals: units sold per variant, channel and store are read from the order lines
(one index-only range per product) instead of being kept in `product_breakdowns`, which
keeps the returns and the reported sales; the lines' product index covers that read

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COVERED = ["tenant_id", "product_id", "variant_id", "channel", "store_id", "quantity"]
LEFT = (
    "units_returned",
    "refunded",
    "reported_units_sold",
    "reported_units_returned",
    "reported_refunded",
)


def upgrade() -> None:
    op.drop_index("ix_order_lines_tenant_id_product_id", table_name="order_lines")
    op.create_index("ix_order_lines_sales_by_product", "order_lines", COVERED, unique=False)
    # SQLite 3.35+ and PostgreSQL drop a plain column in place (a batch copy of the table
    # would lose SQLite's WITHOUT ROWID).
    op.execute("ALTER TABLE product_breakdowns DROP COLUMN units_sold")
    # Rows that held only verified sales now hold nothing.
    op.execute(
        "DELETE FROM product_breakdowns WHERE " + " AND ".join(f"{name} = 0" for name in LEFT)
    )


def downgrade() -> None:
    op.add_column(
        "product_breakdowns",
        sa.Column("units_sold", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # The kept figures again: each key's units sold, from the lines.
    columns = "tenant_id, product_id, variant_id, channel, store_id, currency"
    op.execute(
        f"INSERT INTO product_breakdowns ({columns}, units_sold, {', '.join(LEFT)})"
        " SELECT tenant_id, product_id, COALESCE(variant_id, ''), channel,"
        " COALESCE(store_id, ''), currency, SUM(quantity), 0, 0, 0, 0, 0 FROM order_lines"
        " WHERE channel IS NOT NULL AND currency IS NOT NULL"
        " GROUP BY tenant_id, product_id, COALESCE(variant_id, ''), channel,"
        " COALESCE(store_id, ''), currency"
        f" ON CONFLICT ({columns}) DO UPDATE SET units_sold = excluded.units_sold"
    )
    if op.get_bind().dialect.name == "postgresql":  # (SQLite cannot drop a default)
        op.execute("ALTER TABLE product_breakdowns ALTER COLUMN units_sold DROP DEFAULT")
    op.drop_index("ix_order_lines_sales_by_product", table_name="order_lines")
    op.create_index(
        "ix_order_lines_tenant_id_product_id", "order_lines", ["tenant_id", "product_id"]
    )
