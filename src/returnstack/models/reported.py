from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, ClientId, Currency, Money, UTCDateTime


class ReportedEvent(Base):
    """An event sent with a publishable key: a signal, not a fact (API.md section 2).

    Kept apart from the verified ledger (`events`), so a reported id never makes a verified
    event with the same id a duplicate. It names no person (customer data is not kept), never
    becomes an order or a return, and feeds only product signals and reports.
    """

    __tablename__ = "reported_events"
    __table_args__ = (
        Index("ix_reported_events_tenant_id_occurred_at", "tenant_id", "occurred_at"),
        {"sqlite_with_rowid": False},
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(ClientId, primary_key=True)
    id: Mapped[str] = mapped_column(String(40))  # evt_..., the server's id of the event
    type: Mapped[str] = mapped_column(String(20))  # purchase | return
    order_id: Mapped[str] = mapped_column(ClientId)
    channel: Mapped[str] = mapped_column(String(10))
    store_id: Mapped[str | None] = mapped_column(ClientId)
    currency: Mapped[str] = mapped_column(Currency)
    refund_amount: Mapped[int | None] = mapped_column(Money)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(40))  # api | constructor | sailthru | ...


class ReportedItem(Base):
    """One item of a reported event: what product signals count."""

    __tablename__ = "reported_items"
    __table_args__ = (
        Index("ix_reported_items_tenant_id_product_id", "tenant_id", "product_id"),
        {"sqlite_with_rowid": False},
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_client_id: Mapped[str] = mapped_column(ClientId, primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[str] = mapped_column(ClientId)
    variant_id: Mapped[str | None] = mapped_column(ClientId)
    category: Mapped[str | None] = mapped_column(String(500))
    quantity: Mapped[int]
    unit_price: Mapped[int | None] = mapped_column(Money)
    reason: Mapped[str | None] = mapped_column(String(64))  # a known code, or "other"
