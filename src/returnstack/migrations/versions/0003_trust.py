"""trust: reported events kept apart, idempotency keys scoped, signing secret rotation

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 17:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reported_events",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("order_id", sa.String(length=128), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("store_id", sa.String(length=128), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("refund_amount", sa.BigInteger(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "client_id", name=op.f("pk_reported_events")),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_reported_events_tenant_id_occurred_at",
        "reported_events",
        ["tenant_id", "occurred_at"],
    )
    op.create_table(
        "reported_items",
        sa.Column("tenant_id", sa.String(length=40), nullable=False),
        sa.Column("event_client_id", sa.String(length=128), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.String(length=128), nullable=False),
        sa.Column("variant_id", sa.String(length=128), nullable=True),
        sa.Column("category", sa.String(length=500), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint(
            "tenant_id", "event_client_id", "position", name=op.f("pk_reported_items")
        ),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_reported_items_tenant_id_product_id", "reported_items", ["tenant_id", "product_id"]
    )

    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("previous_signing_secret", sa.String(length=200), nullable=True)
        )
        batch_op.add_column(
            sa.Column("previous_secret_expires_at", sa.DateTime(timezone=True), nullable=True)
        )

    # Idempotency keys gain their scope in the primary key. Keys stored so far came from
    # secret and publishable keys alike; they are kept as "secret" (they expire within 24 h).
    with op.batch_alter_table("idempotency_keys", schema=None, recreate="always") as batch_op:
        batch_op.add_column(
            sa.Column("scope", sa.String(length=200), nullable=False, server_default="secret")
        )
        batch_op.drop_constraint("pk_idempotency_keys", type_="primary")
        batch_op.create_primary_key("pk_idempotency_keys", ["tenant_id", "scope", "key"])
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.alter_column("scope", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("idempotency_keys", schema=None, recreate="always") as batch_op:
        batch_op.drop_constraint("pk_idempotency_keys", type_="primary")
        batch_op.drop_column("scope")
        batch_op.create_primary_key("pk_idempotency_keys", ["tenant_id", "key"])
    with op.batch_alter_table("tenants", schema=None) as batch_op:
        batch_op.drop_column("previous_secret_expires_at")
        batch_op.drop_column("previous_signing_secret")
    op.drop_index("ix_reported_items_tenant_id_product_id", table_name="reported_items")
    op.drop_table("reported_items")
    op.drop_index("ix_reported_events_tenant_id_occurred_at", table_name="reported_events")
    op.drop_table("reported_events")
