"""product signals: a product's units sold per variant, channel and store are kept in
`product_breakdowns` once it has sold 500 units (`product_signals.sales_kept`); before,
its stats group its order lines, which the lines' product index now covers

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

KEEP_SALES_FROM = 500  # products.upkeep.KEEP_SALES_FROM when this was written
COVERED = ["tenant_id", "product_id", "variant_id", "channel", "store_id", "quantity"]
COUNTERS = (
    "units_sold",
    "units_returned",
    "refunded",
    "reported_units_sold",
    "reported_units_returned",
    "reported_refunded",
)
SMALL = (
    "EXISTS (SELECT 1 FROM product_signals WHERE"
    " product_signals.tenant_id = product_breakdowns.tenant_id"
    " AND product_signals.product_id = product_breakdowns.product_id"
    " AND NOT product_signals.sales_kept)"
)


def upgrade() -> None:
    op.drop_index("ix_order_lines_tenant_id_product_id", table_name="order_lines")
    op.create_index("ix_order_lines_sales_by_product", "order_lines", COVERED, unique=False)
    op.add_column(
        "product_signals",
        sa.Column("sales_kept", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # Products that sold fewer units than the threshold: their sales are read from the
    # lines from now on (what `profiles rebuild` would compute).
    op.execute(f"UPDATE product_signals SET sales_kept = (units_sold >= {KEEP_SALES_FROM})")
    op.execute(f"UPDATE product_breakdowns SET units_sold = 0 WHERE {SMALL}")
    op.execute(
        "DELETE FROM product_breakdowns WHERE " + " AND ".join(f"{name} = 0" for name in COUNTERS)
    )


def downgrade() -> None:
    # Every product's units sold kept again: those of the small ones, from their lines.
    columns = "tenant_id, product_id, variant_id, channel, store_id, currency"
    op.execute(
        f"INSERT INTO product_breakdowns ({columns}, {', '.join(COUNTERS)})"
        " SELECT order_lines.tenant_id, order_lines.product_id,"
        " COALESCE(order_lines.variant_id, ''), order_lines.channel,"
        " COALESCE(order_lines.store_id, ''), order_lines.currency, SUM(order_lines.quantity),"
        " 0, 0, 0, 0, 0 FROM order_lines JOIN product_signals"
        " ON product_signals.tenant_id = order_lines.tenant_id"
        " AND product_signals.product_id = order_lines.product_id"
        " WHERE NOT product_signals.sales_kept AND order_lines.channel IS NOT NULL"
        " GROUP BY order_lines.tenant_id, order_lines.product_id,"
        " COALESCE(order_lines.variant_id, ''), order_lines.channel,"
        " COALESCE(order_lines.store_id, ''), order_lines.currency"
        f" ON CONFLICT ({columns}) DO UPDATE SET units_sold = excluded.units_sold"
    )
    op.execute("ALTER TABLE product_signals DROP COLUMN sales_kept")
    op.drop_index("ix_order_lines_sales_by_product", table_name="order_lines")
    op.create_index(
        "ix_order_lines_tenant_id_product_id", "order_lines", ["tenant_id", "product_id"]
    )
