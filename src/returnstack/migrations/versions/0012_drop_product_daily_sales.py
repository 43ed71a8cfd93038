"""product signals: the daily rollup of units sold dropped (reports read the facts)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Its upkeep cost ingestion more than the rest of the product signals (about one row per
    # order line, added in the transaction of the facts); reports read units sold from the
    # facts again (docs/api.md, "Kept in the transaction, or derived by queries?").
    op.drop_table("product_daily_sales")


def downgrade() -> None:
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
