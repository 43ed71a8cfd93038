from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, ClientId, UTCDateTime


class StorefrontSession(Base):
    """A customer's or guest's session on the storefront. The token names its tenant, so it is
    found by (tenant, hash of the token) like every other row."""

    __tablename__ = "storefront_sessions"
    __table_args__ = {"sqlite_with_rowid": False}

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # customer | guest
    customer_id: Mapped[str | None] = mapped_column(ClientId)
    email: Mapped[str | None] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
