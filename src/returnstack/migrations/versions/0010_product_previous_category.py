"""product signals: the category before the last write, for the rollups

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Written by the upkeep's one upsert (`SET previous_category = product_signals.category`)
    # and read back by its RETURNING: the category rollups move a product's units when its
    # category changes, and RETURNING shows only the row as written.
    op.add_column(
        "product_signals", sa.Column("previous_category", sa.String(length=500), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("product_signals", "previous_category")
