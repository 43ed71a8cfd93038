"""Returns: recorded returns from events (the lifecycle of API.md section 4 builds on this)."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from returnstack.events.schemas import ReturnEvent
from returnstack.kit.bulk import insert_rows
from returnstack.kit.ids import new_id
from returnstack.models import Return, ReturnHistory, ReturnItem
from returnstack.orders.service import store_resource
from returnstack.outbox.service import DomainEvent
from returnstack.outbox.service import record as record_domain_events
from returnstack.returns.reasons import DEFAULT_REASONS, normalize_free_text_reason
from returnstack.returns.render import render_return
from returnstack.tenants.service import next_numbers


@dataclass(frozen=True, slots=True)
class RecordedReturn:
    event_id: str
    event: ReturnEvent
    currency: str


def record_returns(
    session: Session, *, tenant_id: str, recorded: Sequence[RecordedReturn], actor: str
) -> list[str]:
    """Store returns that already happened elsewhere: closed, `source: "event"`, counted as
    returned (and claimed) against their order's lines. Returns their ids."""
    if not recorded:
        return []
    now = datetime.now(UTC)
    known_reasons = frozenset(DEFAULT_REASONS)
    returns, items, history, domain_events = [], [], [], []
    numbers = next_numbers(session, tenant_id=tenant_id, name="return_number", count=len(recorded))
    for number, entry in zip(numbers, recorded, strict=True):
        event = entry.event
        refund = event.refund
        ret: dict[str, Any] = {
            "tenant_id": tenant_id,
            "id": new_id("ret"),
            "number": number,
            "external_id": None,
            "status": "closed",
            "source": "event",
            "channel": event.channel,
            "store_id": event.store.id if event.store else None,
            "customer_id": event.customer.id,
            "email": event.customer.email,
            "currency": entry.currency,
            "refund_amount": refund.amount if refund else None,
            "refund_method": refund.method if refund else None,
            "refunded_at": event.timestamp if refund else None,
            "fee_restocking": 0,
            "fee_shipping": 0,
            "note": None,
            "metadata": {},
            "event_id": entry.event_id,
            "created_at": event.timestamp,
            "updated_at": now,
            "closed_at": event.timestamp,
            "version": 1,
        }
        ret_items = []
        for position, item in enumerate(event.items, start=1):
            reason, note = normalize_free_text_reason(item.reason, item.note, known_reasons)
            ret_items.append(
                {
                    "tenant_id": tenant_id,
                    "return_id": ret["id"],
                    "position": position,
                    "order_id": event.order_id,
                    "line_id": item.line_id,
                    "product_id": item.product_id,
                    "variant_id": item.variant_id,
                    "quantity": item.quantity,
                    "received_quantity": item.quantity,
                    "reason": reason,
                    "note": note,
                    "resolution": "refund",
                    "unit_price": item.unit_price,
                    "outcome": "received",
                    "disposition": None,
                }
            )
        entry_history = {
            "tenant_id": tenant_id,
            "return_id": ret["id"],
            "seq": 1,
            "at": event.timestamp,
            "from_status": None,
            "to_status": "closed",
            "action": "record",
            "actor": actor,
            "note": f"recorded from event {event.id}",
        }
        returns.append(ret)
        items.extend(ret_items)
        history.append(entry_history)
        data = render_return(ret, ret_items, [entry_history], store=store_resource(event.store))
        domain_events.append(DomainEvent(type="return.recorded", data=data))
    insert_rows(session, Return, returns)
    insert_rows(session, ReturnItem, items)
    insert_rows(session, ReturnHistory, history)
    record_domain_events(session, tenant_id=tenant_id, events=domain_events)
    return [ret["id"] for ret in returns]
