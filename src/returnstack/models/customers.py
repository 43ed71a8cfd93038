from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, ClientId, UTCDateTime


class Customer(Base):
    """A customer known by the retailer's id (`customer.id` in events)."""

    __tablename__ = "customers"
    __table_args__ = (
        Index("ix_customers_tenant_id_email", "tenant_id", "email"),
        {"sqlite_with_rowid": False},
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(ClientId, primary_key=True)
    # cus_..., the server's opaque id of the customer: what webhooks may name without
    # naming the person (customer.erased carries only this).
    server_id: Mapped[str] = mapped_column(String(40))
    email: Mapped[str | None] = mapped_column(String(254))
    name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CustomerEmail(Base):
    """Every normalised email seen, linked to a customer id once an event carries both.

    An email with no customer id is a guest; its history joins the customer when linked.
    """

    __tablename__ = "customer_emails"
    __table_args__ = (
        # A customer's emails (profiles, erasure).
        Index("ix_customer_emails_tenant_id_customer_id", "tenant_id", "customer_id"),
        {"sqlite_with_rowid": False},
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    customer_id: Mapped[str | None] = mapped_column(ClientId)
    # cus_..., the server's id of the email as a guest; null for an email that came with
    # its customer id the first time (never a guest).
    server_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
