from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from returnstack.models.base import Base, Json, UTCDateTime


class WebhookSubscription(Base):
    """Where a tenant's domain events are pushed, and the secret they are signed with."""

    __tablename__ = "webhook_subscriptions"
    __table_args__ = (
        Index("ix_webhook_subscriptions_tenant_id_created_at", "tenant_id", "created_at"),
    )

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(Json)  # event types, or ["*"]
    description: Mapped[str | None] = mapped_column(String(500))
    enabled: Mapped[bool] = mapped_column(Boolean)
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    # Kept retrievable: every delivery is signed with it (HMAC-SHA256, Standard Webhooks).
    secret: Mapped[str] = mapped_column(String(100))
    # After rotate-secret: the secret it replaced, which still signs until it expires.
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The first failed attempt since the last success: 5 days of failures disable.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One delivery attempt of a message to a subscription.

    A `pending` row is the next attempt to make (due at `due_at`); a worker claims it with
    a lease, and its outcome turns it `succeeded` or `failed`, in the same transaction as
    the row of the next attempt when one follows. The body is never copied here: it is read
    from the outbox row when sent (so erasing a person reaches every delivery).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The claim: pending rows in the order it takes them (due time, then message), so
        # it reads only as far as the rows it takes.
        Index(
            "ix_webhook_deliveries_claim",
            "due_at",
            "message_seq",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        # Order per resource: an earlier pending message of the same resource holds it up.
        Index(
            "ix_webhook_deliveries_ordering",
            "tenant_id",
            "subscription_id",
            "resource_key",
            "message_seq",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_deliveries_subscription", "tenant_id", "subscription_id", "id"),
        Index("ix_webhook_deliveries_message", "tenant_id", "message_id"),
    )

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(40))
    message_id: Mapped[str] = mapped_column(String(40))
    message_seq: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(64))
    # A hash naming the message's resource (a return, an order, a customer); no personal data.
    resource_key: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(Integer)
    # Position in the retry schedule: 0 for the first attempt of a run (a new message, or
    # recover), and past the schedule's end for a manual retry (one attempt, no follow-up).
    step: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))  # pending | succeeded | failed
    trigger: Mapped[str] = mapped_column(String(20))  # scheduled | manual | recover
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_token: Mapped[str | None] = mapped_column(String(40))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(String(1000))
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookState(Base):
    """Named rows shared by every dispatcher: the feed's sequence counter (its row lock
    serialises numbering) and, on SQLite, the lease of the one dispatcher allowed to run."""

    __tablename__ = "webhook_state"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str | None] = mapped_column(String(80))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
