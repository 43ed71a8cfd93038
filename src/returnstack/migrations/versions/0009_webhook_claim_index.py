"""webhooks: the claim's index holds the order it reads (due time, then message), so a
claim stops after the rows it takes instead of sorting the whole queue

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 20:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_webhook_deliveries_due", sqlite_where=PENDING, postgresql_where=PENDING
        )
        batch_op.create_index(
            "ix_webhook_deliveries_claim",
            ["due_at", "message_seq"],
            unique=False,
            sqlite_where=PENDING,
            postgresql_where=PENDING,
        )


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_webhook_deliveries_claim", sqlite_where=PENDING, postgresql_where=PENDING
        )
        batch_op.create_index(
            "ix_webhook_deliveries_due",
            ["due_at"],
            unique=False,
            sqlite_where=PENDING,
            postgresql_where=PENDING,
        )
