"""Reported events (API.md section 2): what a publishable key sends.

A publishable key is public, so its events are signals, not facts. They are kept apart from
the verified ledger (`reported_events`, `reported_items`) for product signals and reports,
and never touch orders, order lines, returns, refunds, customers, identity links, profiles
or stores. Nothing that names a person is kept or sent: no customer id, email or name, no
item note, no free-text reason (a known reason code, else "other"), no store details.
"""

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from returnstack.events.schemas import PurchaseEvent, PurchaseItem, ReturnEvent, ReturnItem, Trust
from returnstack.kit.bulk import insert_rows
from returnstack.kit.timefmt import rfc3339
from returnstack.models import ReportedItem
from returnstack.outbox.service import DomainEvent
from returnstack.outbox.service import record as record_domain_events
from returnstack.products import upkeep as product_signals
from returnstack.returns.policy import get_policy
from returnstack.returns.reasons import normalize_free_text_reason

MESSAGE_TYPES = {"purchase": "purchase.reported", "return": "return.reported"}


def ledger_row(
    event: PurchaseEvent | ReturnEvent, *, server_id: str, currency: str
) -> dict[str, Any]:
    """The event's row in `reported_events` (without tenant, source and receipt time)."""
    refund = event.refund if isinstance(event, ReturnEvent) else None
    return {
        "id": server_id,
        "client_id": event.id,
        "type": event.type,
        "order_id": event.order_id,
        "channel": event.channel,
        "store_id": event.store.id if event.store else None,
        "currency": currency,
        "refund_amount": refund.amount if refund else None,
        "occurred_at": event.timestamp,
    }


def record_reported(
    session: Session,
    *,
    tenant_id: str,
    recorded: Sequence[tuple[dict[str, Any], PurchaseEvent | ReturnEvent]],
) -> None:
    """The items and outbox messages of reported events just added to the ledger, given as
    (their `reported_events` row, the event)."""
    if not recorded:
        return
    known_reasons: frozenset[str] = frozenset()
    if any(isinstance(event, ReturnEvent) for _, event in recorded):
        policy = get_policy(session, tenant_id=tenant_id)
        known_reasons = frozenset(reason.code for reason in policy.reasons)
    items: list[dict[str, Any]] = []
    messages = []
    for row, event in recorded:
        given: Sequence[PurchaseItem | ReturnItem] = event.items
        event_items = [
            _item(item, known_reasons) | {"position": position}
            for position, item in enumerate(given, start=1)
        ]
        items.extend(
            {"tenant_id": tenant_id, "event_client_id": event.id} | item for item in event_items
        )
        messages.append(
            DomainEvent(
                type=MESSAGE_TYPES[event.type],
                data={
                    "id": row["id"],
                    "client_id": event.id,
                    "type": event.type,
                    "trust": Trust.reported.value,
                    "order_id": event.order_id,
                    "channel": event.channel,
                    "store_id": row["store_id"],
                    "currency": row["currency"],
                    "occurred_at": rfc3339(event.timestamp),
                    "items": [
                        {key: value for key, value in item.items() if key != "position"}
                        for item in event_items
                    ],
                    "refund_amount": row["refund_amount"],
                },
            )
        )
    # Sorted by key, as every insert of the ingestion path (no deadlocks on PostgreSQL).
    items.sort(key=lambda item: (item["event_client_id"], item["position"]))
    insert_rows(session, ReportedItem, items)
    events = [row for row, _ in recorded]
    product_signals.count_reported(session, tenant_id=tenant_id, events=events, items=items)
    record_domain_events(session, tenant_id=tenant_id, events=messages)


def _item(item: PurchaseItem | ReturnItem, known_reasons: frozenset[str]) -> dict[str, Any]:
    """What product signals count of one item; free text (names, notes) is left behind."""
    if isinstance(item, PurchaseItem):
        category, reason = item.category, None
    else:
        # A known code stays; other text becomes "other" and is not kept: it may name a person.
        category, (reason, _) = None, normalize_free_text_reason(item.reason, None, known_reasons)
    return {
        "product_id": item.product_id,
        "variant_id": item.variant_id,
        "category": category,
        "quantity": item.quantity,
        "unit_price": item.unit_price,
        "reason": reason,
    }
