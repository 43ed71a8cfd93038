from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, Json, UTCDateTime


class OutboxEvent(Base):
    """A domain event, written in the same transaction as the change it describes.

    The webhook dispatcher reads undispatched rows; `id` is the event's stable id that
    receivers see as `webhook-id` on every delivery attempt.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        # Only undispatched rows are indexed, so the index stays as small as the backlog.
        Index(
            "ix_outbox_pending",
            "created_at",
            sqlite_where=text("dispatched_at IS NULL"),
            postgresql_where=text("dispatched_at IS NULL"),
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    changes: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
