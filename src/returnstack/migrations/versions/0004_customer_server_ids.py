"""customer server ids: an opaque cus_... id per customer and per guest email

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from returnstack.kit.ids import new_id

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 5000


def _backfill(table: str, key: str, guests_only: bool) -> None:
    """Give existing rows their own id (made in Python: the same kind of ids on both
    backends). Of the emails, only guests (not linked to a customer) have one."""
    connection = op.get_bind()
    rows = sa.table(
        table,
        sa.column("tenant_id"),
        sa.column(key),
        sa.column("server_id"),
        sa.column("customer_id"),
    )
    update = (
        sa.update(rows)
        .where(rows.c.tenant_id == sa.bindparam("t"), rows.c[key] == sa.bindparam("k"))
        .values(server_id=sa.bindparam("s"))
    )
    query = sa.select(rows.c.tenant_id, rows.c[key])
    if guests_only:
        query = query.where(rows.c.customer_id.is_(None))
    keys = connection.execute(query).all()
    for start in range(0, len(keys), BATCH):
        connection.execute(
            update,
            [
                {"t": tenant, "k": value, "s": new_id("cus")}
                for tenant, value in keys[start : start + BATCH]
            ],
        )


def upgrade() -> None:
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("server_id", sa.String(length=40), nullable=True))
    _backfill("customers", "id", guests_only=False)
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.alter_column("server_id", existing_type=sa.String(length=40), nullable=False)
    with op.batch_alter_table("customer_emails", schema=None) as batch_op:
        batch_op.add_column(sa.Column("server_id", sa.String(length=40), nullable=True))
    _backfill("customer_emails", "email", guests_only=True)


def downgrade() -> None:
    for table in ("customer_emails", "customers"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("server_id")
