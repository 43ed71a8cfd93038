from datetime import datetime

from sqlalchemy import BigInteger, Double, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, ClientId, Currency, Money, UTCDateTime


class CustomerProfile(Base):
    """What one customer (or one guest email) bought and returned in one currency.

    Derived from the facts (orders, lines, returns) and kept up to date in the same
    transaction as they change; `returnstack profiles rebuild` recomputes it from them.
    `owner` is `c:<customer id>` for a customer, `g:<email>` for an email no customer
    claimed yet (a guest), whose rows move to the customer when the two are linked.
    """

    __tablename__ = "customer_profiles"
    __table_args__ = (
        Index("ix_customer_profiles_tenant_id_customer_id", "tenant_id", "customer_id"),
        Index("ix_customer_profiles_tenant_id_net_revenue", "tenant_id", "net_revenue"),
        {"sqlite_with_rowid": False},
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(260), primary_key=True)
    currency: Mapped[str] = mapped_column(Currency, primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(ClientId)  # null for a guest
    guest_email: Mapped[str | None] = mapped_column(String(254))  # a customer's: customers
    orders: Mapped[int] = mapped_column(BigInteger, default=0)
    items_purchased: Mapped[int] = mapped_column(BigInteger, default=0)
    gross_revenue: Mapped[int] = mapped_column(Money, default=0)
    returns: Mapped[int] = mapped_column(BigInteger, default=0)
    items_returned: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded: Mapped[int] = mapped_column(Money, default=0)
    net_revenue: Mapped[int] = mapped_column(Money, default=0)  # gross_revenue - refunded
    return_rate_items: Mapped[float] = mapped_column(Double, default=0.0)
    return_rate_value: Mapped[float] = mapped_column(Double, default=0.0)
    online_orders: Mapped[int] = mapped_column(BigInteger, default=0)
    offline_orders: Mapped[int] = mapped_column(BigInteger, default=0)
    online_returns: Mapped[int] = mapped_column(BigInteger, default=0)
    offline_returns: Mapped[int] = mapped_column(BigInteger, default=0)
    first_order_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_order_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_return_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    serial_returner: Mapped[bool] = mapped_column(default=False)


class Segment(Base):
    """A saved segmentation expression (`where`), evaluated when its members are listed."""

    __tablename__ = "segments"

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    expression: Mapped[str] = mapped_column(String(4000))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
