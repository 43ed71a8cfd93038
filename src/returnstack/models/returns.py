from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from sqlalchemy import BigInteger, ForeignKey, ForeignKeyConstraint, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, ClientId, Currency, Json, Money, UTCDateTime


class ReturnStatus(StrEnum):
    requested = "requested"
    approved = "approved"
    declined = "declined"
    received = "received"
    refunded = "refunded"
    closed = "closed"
    cancelled = "cancelled"


# The vocabularies of a return, written once for the API, the events and the dashboard.
Channel = Literal["online", "offline"]
ReturnSource = Literal["api", "storefront", "event", "dashboard"]
Resolution = Literal["refund", "store_credit", "exchange"]
RefundMethod = Literal["original_payment", "store_credit", "gift_card", "cash", "exchange"]
Outcome = Literal["received", "damaged", "wrong_item", "lost_in_transit"]
Disposition = Literal["restock", "not_restocked"]
DeclineReason = Literal["final_sale", "return_period_ended", "other"]


class Return(Base):
    __tablename__ = "returns"
    __table_args__ = (
        UniqueConstraint("tenant_id", "number"),
        # The list's order whole (newest first, then id): read a page in index order.
        Index("ix_returns_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        Index("ix_returns_tenant_id_customer_id", "tenant_id", "customer_id"),
        Index("ix_returns_tenant_id_email", "tenant_id", "email"),
        # The returns reports: a currency's returns in a time range, from one range of this
        # index (on PostgreSQL index-only: it carries what the reports read of a return).
        Index(
            "ix_returns_tenant_id_currency_created_at",
            "tenant_id",
            "currency",
            "created_at",
            postgresql_include=["id", "refund_amount", "channel", "store_id"],
        ),
        # A vendor that sends one return in several requests finds it by its event.
        Index("ix_returns_tenant_id_event_id", "tenant_id", "event_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger)
    external_id: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[ReturnStatus] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(20))  # a ReturnSource
    channel: Mapped[str] = mapped_column(String(10))
    store_id: Mapped[str | None] = mapped_column(ClientId)
    customer_id: Mapped[str | None] = mapped_column(ClientId)
    email: Mapped[str | None] = mapped_column(String(254))
    currency: Mapped[str] = mapped_column(Currency)
    refund_amount: Mapped[int | None] = mapped_column(Money)
    refund_method: Mapped[str | None] = mapped_column(String(20))
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fee_restocking: Mapped[int] = mapped_column(Money, default=0)
    fee_shipping: Mapped[int] = mapped_column(Money, default=0)
    note: Mapped[str | None] = mapped_column(String(4000))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", Json, default=dict)
    event_id: Mapped[str | None] = mapped_column(String(40))  # set when recorded from an event
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    version: Mapped[int] = mapped_column(default=1)
    # Whether the items count against their order lines. Declining or cancelling releases
    # them for good ("a declined or cancelled return claims nothing, whatever happens to it
    # afterwards"); reopening claims them again, after checking they are still available.
    claiming: Mapped[bool] = mapped_column(default=True)


class ReturnItem(Base):
    __tablename__ = "return_items"
    __table_args__ = (
        Index("ix_return_items_tenant_id_order_id", "tenant_id", "order_id"),
        Index("ix_return_items_tenant_id_product_id", "tenant_id", "product_id"),
        {"sqlite_with_rowid": False},
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    return_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[str] = mapped_column(ClientId)
    # Null when a recorded return names only the product; it is matched to the order's
    # line by product (and variant) when read, so it joins an order that arrives later.
    line_id: Mapped[str | None] = mapped_column(ClientId)
    product_id: Mapped[str] = mapped_column(ClientId)
    variant_id: Mapped[str | None] = mapped_column(ClientId)
    quantity: Mapped[int]
    received_quantity: Mapped[int] = mapped_column(default=0)
    # Of the units received, those that came back in good order and those damaged: receipts
    # of one item may have different outcomes, and only these two may be refunded.
    good_quantity: Mapped[int] = mapped_column(default=0)
    damaged_quantity: Mapped[int] = mapped_column(default=0)
    reason: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(String(4000))
    resolution: Mapped[str] = mapped_column(String(20))
    unit_price: Mapped[int | None] = mapped_column(Money)
    # Restocking fee in hundredths of a percent, fixed when the item was requested
    # (0 for merchant-fault reasons), so later policy changes do not alter open returns.
    fee_basis_points: Mapped[int] = mapped_column(default=0)
    outcome: Mapped[str | None] = mapped_column(String(20))
    disposition: Mapped[str | None] = mapped_column(String(20))


class ReturnHistory(Base):
    __tablename__ = "return_history"
    __table_args__ = ({"sqlite_with_rowid": False},)

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    return_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    from_status: Mapped[str | None] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    action: Mapped[str] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(String(4000))


class Policy(Base):
    """A tenant's return policy document (returnstack.returns.policy.PolicyDocument)."""

    __tablename__ = "policies"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Attachment(Base):
    __tablename__ = "attachments"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id", "return_id"], ["returns.tenant_id", "returns.id"]),
        Index("ix_attachments_tenant_id_return_id", "tenant_id", "return_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    return_id: Mapped[str] = mapped_column(String(40))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
