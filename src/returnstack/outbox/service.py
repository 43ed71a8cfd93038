"""The transactional outbox: every service records its domain events here, in its own
transaction, so a change and the news of it commit (or vanish) together."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from returnstack.kit.bulk import insert_rows
from returnstack.kit.ids import new_id
from returnstack.models import OutboxEvent

EVENT_TYPES = frozenset(
    {
        "return.requested",
        "return.approved",
        "return.declined",
        "return.received",
        "return.refunded",
        "return.closed",
        "return.cancelled",
        "return.reopened",
        "return.updated",
        "return.recorded",
        "purchase.recorded",
        "purchase.reported",
        "return.reported",
        "customer.flagged",
        "customer.unflagged",
        "customer.erased",
    }
)


@dataclass(frozen=True, slots=True)
class DomainEvent:
    type: str
    data: dict[str, Any]
    changes: dict[str, Any] | None = None


def record(session: Session, *, tenant_id: str, events: Iterable[DomainEvent]) -> list[str]:
    """Write domain events to the outbox (one multi-row INSERT); returns their ids."""
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for domain_event in events:
        if domain_event.type not in EVENT_TYPES:
            raise ValueError(f"unknown domain event type {domain_event.type!r}")
        rows.append(
            {
                "tenant_id": tenant_id,
                "id": new_id("msg"),
                "type": domain_event.type,
                "data": domain_event.data,
                "changes": domain_event.changes,
                "created_at": now,
                "dispatched_at": None,
            }
        )
    insert_rows(session, OutboxEvent, rows)
    return [row["id"] for row in rows]
