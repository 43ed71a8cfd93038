"""product signals: units sold per day, product, channel, store and currency, for reports

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Filled by the upkeep from now on; `returnstack profiles rebuild` fills it from the
    # facts already recorded (until then reports count fewer units sold on past days).
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


def downgrade() -> None:
    op.drop_table("product_daily_sales")
