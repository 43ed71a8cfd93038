from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, Json, UTCDateTime


class OutboxEvent(Base):
    """A domain event, written in the same transaction as the change it describes.

    `id` is the event's stable id that receivers see as `webhook-id` on every delivery
    attempt. After commit, the dispatcher *publishes* each row: it numbers it (`seq`, the
    order of the message feed, given only to committed rows, so a reader resuming after a
    number never misses a row committed late) and queues its webhook deliveries; then
    `dispatched_at` is set.
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
        # The message feed of a tenant, in publication order.
        Index(
            "ix_outbox_tenant_id_seq",
            "tenant_id",
            "seq",
            unique=True,
            sqlite_where=text("seq IS NOT NULL"),
            postgresql_where=text("seq IS NOT NULL"),
        ),
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(Json)
    changes: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    seq: Mapped[int | None] = mapped_column(BigInteger)
    # A hash naming the resource the event is about (deliveries keep its order); see
    # outbox.service.resource_key. A hash, so that no personal data is copied here.
    resource_key: Mapped[str | None] = mapped_column(String(64))
