from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, ClientId, UTCDateTime


class Event(Base):
    """Every accepted event, keyed by the client's id: the ledger that makes ingestion idempotent."""

    __tablename__ = "events"
    __table_args__ = (UniqueConstraint("tenant_id", "client_id"),)

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(ClientId)
    type: Mapped[str] = mapped_column(String(20))
    order_id: Mapped[str] = mapped_column(ClientId)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(40))  # api | import | constructor | ...
