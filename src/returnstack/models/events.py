from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, ClientId, UTCDateTime


class Event(Base):
    """Every accepted event, keyed by the client's id: the ledger that makes ingestion
    idempotent."""

    __tablename__ = "events"
    __table_args__ = {"sqlite_with_rowid": False}

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    client_id: Mapped[str] = mapped_column(ClientId, primary_key=True)
    id: Mapped[str] = mapped_column(String(40))  # evt_..., the server's id of the event
    type: Mapped[str] = mapped_column(String(20))
    order_id: Mapped[str] = mapped_column(ClientId)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(40))  # api | import | constructor | ...
