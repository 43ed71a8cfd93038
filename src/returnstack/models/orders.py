from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, ClientId, Currency, Money, UTCDateTime


class Store(Base):
    __tablename__ = "stores"
    __table_args__ = {"sqlite_with_rowid": False}

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(ClientId, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(200))
    region: Mapped[str | None] = mapped_column(String(200))
    country: Mapped[str | None] = mapped_column(String(2))
    postal_code: Mapped[str | None] = mapped_column(String(20))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Order(Base):
    """An order, made by the first purchase event that names it."""

    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_tenant_id_customer_id", "tenant_id", "customer_id"),
        Index("ix_orders_tenant_id_email", "tenant_id", "email"),
        Index("ix_orders_tenant_id_placed_at", "tenant_id", "placed_at"),  # reports by date
        {"sqlite_with_rowid": False},
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(ClientId, primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(ClientId)
    email: Mapped[str | None] = mapped_column(String(254))
    channel: Mapped[str] = mapped_column(String(10))
    store_id: Mapped[str | None] = mapped_column(ClientId)
    currency: Mapped[str] = mapped_column(Currency)
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    event_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OrderLine(Base):
    __tablename__ = "order_lines"
    __table_args__ = (
        # A product's lines, and what its stats read of them (units sold per variant, channel
        # and store, grouped in index order): on both databases an index-only range.
        Index(
            "ix_order_lines_sales_by_product",
            "tenant_id",
            "product_id",
            "variant_id",
            "channel",
            "store_id",
            "quantity",
        ),
        # Units sold in a time range (the returns reports): one range of this index, which
        # on PostgreSQL carries all the report reads (an index-only scan).
        Index(
            "ix_order_lines_tenant_id_currency_placed_at",
            "tenant_id",
            "currency",
            "placed_at",
            postgresql_include=["product_id", "quantity", "channel", "store_id"],
        ),
        {"sqlite_with_rowid": False},
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_id: Mapped[str] = mapped_column(ClientId, primary_key=True)
    line_id: Mapped[str] = mapped_column(ClientId, primary_key=True)
    position: Mapped[int]
    product_id: Mapped[str] = mapped_column(ClientId)
    variant_id: Mapped[str | None] = mapped_column(ClientId)
    name: Mapped[str | None] = mapped_column(String(500))
    category: Mapped[str | None] = mapped_column(String(500))
    url: Mapped[str | None] = mapped_column(String(2048))
    quantity: Mapped[int]
    unit_price: Mapped[int] = mapped_column(Money)
    # The order's, copied when the line is recorded (an order never changes them): the
    # reports read units sold from the lines alone, not from a join of every line of the
    # tenant to the orders in range. Null only on a line written by something else.
    placed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    currency: Mapped[str | None] = mapped_column(Currency)
    channel: Mapped[str | None] = mapped_column(String(10))
    store_id: Mapped[str | None] = mapped_column(ClientId)
