from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, ClientId, Currency, Json, Money, UTCDateTime


class Cart(Base):
    """A person's open cart (Sailthru's `incomplete: 1` purchase): stored, never revenue.

    One per email, as Sailthru keeps it: a newer cart replaces it, and a completed purchase by
    the same email removes it. It is no fact: no order, no
    profile, no product signal counts it. Only verified callers store one (a publishable
    key names no person). Erasure deletes the person's cart.
    """

    __tablename__ = "carts"
    __table_args__ = {"sqlite_with_rowid": False}

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    source: Mapped[str] = mapped_column(String(40))  # the vendor adapter (sailthru)
    extid: Mapped[str | None] = mapped_column(ClientId)  # the order id it would become
    currency: Mapped[str] = mapped_column(Currency)
    # [{"id", "title", "url", "qty", "price"}], prices in minor units per unit
    items: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    value: Mapped[int] = mapped_column(Money)
    carted_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the cart's `date`
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
