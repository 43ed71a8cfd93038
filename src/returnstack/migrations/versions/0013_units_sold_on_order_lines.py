"""product signals: reports read units sold from the order lines (which carry their order's
time, currency, channel and store, under one index); the daily rollup is dropped; product
rows and breakdowns leave room for HOT updates on PostgreSQL

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COPIED = ("placed_at", "currency", "channel", "store_id")
UPDATED_IN_PLACE = ("product_signals", "product_breakdowns")


def upgrade() -> None:
    # The daily rollup's upkeep (about one row per order line, in the transaction of the
    # facts) cost ingestion more than the rest of the product signals; a line carrying its
    # order's time and currency serves the same reports from one index range
    # (docs/api.md, "Kept in the transaction, or derived by queries?").
    op.drop_table("product_daily_sales")
    with op.batch_alter_table("order_lines") as batch_op:
        batch_op.add_column(sa.Column("placed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("channel", sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column("store_id", sa.String(length=128), nullable=True))
    # The lines recorded so far take their order's values (an order never changes them).
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "UPDATE order_lines SET placed_at = orders.placed_at, currency = orders.currency,"
            " channel = orders.channel, store_id = orders.store_id FROM orders"
            " WHERE orders.tenant_id = order_lines.tenant_id AND orders.id = order_lines.order_id"
        )
    else:
        op.execute(
            "UPDATE order_lines SET (placed_at, currency, channel, store_id) = ("
            "SELECT placed_at, currency, channel, store_id FROM orders"
            " WHERE orders.tenant_id = order_lines.tenant_id AND orders.id = order_lines.order_id)"
        )
    op.create_index(
        "ix_order_lines_tenant_id_currency_placed_at",
        "order_lines",
        ["tenant_id", "currency", "placed_at"],
        unique=False,
        postgresql_include=["product_id", "quantity", "channel", "store_id"],
    )

    if op.get_bind().dialect.name == "postgresql":
        # Room on each page for HOT updates of the rows every fact rewrites (new pages; a
        # table rewrite, e.g. VACUUM FULL, applies it to the old ones).
        for table in UPDATED_IN_PLACE:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = 70)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in UPDATED_IN_PLACE:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    op.drop_index("ix_order_lines_tenant_id_currency_placed_at", table_name="order_lines")
    with op.batch_alter_table("order_lines") as batch_op:
        for name in reversed(COPIED):
            batch_op.drop_column(name)
    # Created empty, as 0011 did: `returnstack profiles rebuild` (of that version) fills it.
    op.create_table(
        "product_daily_sales",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("product_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("store_id", sa.String(length=128), nullable=False),
        sa.Column("units_sold", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "currency",
            "day",
            "product_id",
            "channel",
            "store_id",
            name=op.f("pk_product_daily_sales"),
        ),
        sqlite_with_rowid=False,
    )
