"""The transactional outbox: every service records its domain events here, in its own
transaction, so a change and the news of it commit (or vanish) together."""

import hashlib
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from returnstack.kit.bulk import insert_rows, select_rows
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

# Dispatchers LISTEN here; a transaction that records events notifies it when it commits.
NOTIFY_CHANNEL = "returnstack_outbox"


class Wake:
    """Wakes the dispatcher of this process: as soon as a transaction with events commits
    (other processes are woken by NOTIFY on PostgreSQL, or poll on SQLite), or an attempt
    ends. `news` counts only the first kind, so a dispatcher woken by an attempt that ended
    does not look for new outbox rows."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.news = 0
        self._forward: int | None = None
        self._forward_lock = threading.Lock()  # `fd` is never written once forgotten

    def forward_to(self, fd: int | None) -> None:
        """Also pass news on to a dispatcher child (webhooks/process.py): a byte written to
        `fd` (non-blocking) per commit; None stops (then `fd` may be closed)."""
        with self._forward_lock:
            self._forward = fd

    def news_arrived(self) -> None:
        self.news += 1
        self._event.set()
        if self._forward is not None:
            with self._forward_lock:
                try:
                    if self._forward is not None:
                        os.write(self._forward, b"\n")
                except OSError:  # the pipe is full (the child has news unread) or closed
                    pass

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


committed = Wake()


@dataclass(frozen=True, slots=True)
class DomainEvent:
    type: str
    data: dict[str, Any]
    changes: dict[str, Any] | None = None


def resource_key(event_type: str, data: dict[str, Any]) -> str | None:
    """A stable name of the resource an event is about (a return, an order, a customer),
    hashed: deliveries of one resource keep their order. Made only of ids that are no
    personal data (it outlives an erasure, which scrubs `data` but not this): a customer
    is named by its profile's server id (cus_...), never by its email or own id; a profile
    without a server id gets no key, and its messages are each ordered on their own."""
    family = event_type.partition(".")[0]
    value: Any = None
    if event_type.endswith(".reported"):
        # Reported signals (publishable keys) are their own resources: they never queue
        # ahead of, nor hold up, the verified events of an order or return.
        family, value = "reported", data.get("id")
    elif family == "return":
        value = data.get("id") or data.get("return_id") or data.get("order_id")
    elif family == "purchase":
        value = data.get("order_id") or data.get("id")
    elif family == "customer":
        # The profile's server id (cus_...), which every customer event carries as `id`.
        value = data.get("id")
    if not isinstance(value, str) or not value:
        return None
    return hashlib.sha256(f"{family}:{value}".encode()).hexdigest()[:40]


def latest_message(session: Session, *, tenant_id: str) -> str | None:
    """The id of the tenant's newest message: it changes with every recorded change (ids
    are time first), so it versions figures derived from the tenant's data."""
    return session.scalar(
        select(func.max(OutboxEvent.id)).where(OutboxEvent.tenant_id == tenant_id)
    )


def notify_dispatchers(session: Session) -> None:
    """Once per transaction: NOTIFY (PostgreSQL sends it at commit, never on rollback) and
    the in-process wake-up after commit (the listeners below)."""
    session.info[_WAKE] = True
    if session.info.get(_NOTIFIED):
        return
    session.info[_NOTIFIED] = True
    if session.get_bind().dialect.name == "postgresql":
        select_rows(session, "SELECT pg_notify(?, '')", [NOTIFY_CHANNEL])


_NOTIFIED = "outbox_notified"  # NOTIFY sent in this transaction
_WAKE = "outbox_wake"  # the in-process dispatcher to wake when it commits


# Registered once, not per transaction (registering a listener costs more than a small
# insert). A savepoint's commit is not the transaction's (group commit); its rollback may
# have taken the NOTIFY with it, so the next message sends another (one is delivered).
@event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    session.info.pop(_NOTIFIED, None)
    if session.info.pop(_WAKE, None):
        committed.news_arrived()


@event.listens_for(Session, "after_soft_rollback")
def _forget_after_rollback(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_NOTIFIED, None)
    if not previous_transaction.nested:
        session.info.pop(_WAKE, None)


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
                "resource_key": resource_key(domain_event.type, domain_event.data),
            }
        )
    if not rows:
        return []
    insert_rows(session, OutboxEvent, rows)
    notify_dispatchers(session)
    return [row["id"] for row in rows]
