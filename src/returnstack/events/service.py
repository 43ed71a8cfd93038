"""Recording purchases and returns: the one path every source of events ends in
(POST /v1/events, `returnstack import`, the compatibility adapters, the demo)."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from returnstack.customers.profiles import ProfileChanges
from returnstack.customers.service import Identity
from returnstack.customers.service import remember as remember_customers
from returnstack.events import repository
from returnstack.events.reported import ledger_row as reported_row
from returnstack.events.reported import record_reported
from returnstack.events.schemas import PurchaseEvent, ReturnEvent, Trust
from returnstack.kit.ids import new_id
from returnstack.models import Event, ReportedEvent
from returnstack.orders.repository import order_owners
from returnstack.orders.service import RecordedPurchase, record_purchases, remember_stores
from returnstack.returns.service import RecordedReturn, ReturnOptions, record_returns


@dataclass
class RecordResult:
    accepted: int = 0
    duplicates: int = 0
    ids: list[str] = field(default_factory=list)  # one per event given, in order
    # One per event given: recorded by this call (its id's first occurrence, new to the
    # ledger), so a caller that joined several requests' events can tell each its own counts.
    new: list[bool] = field(default_factory=list)


def record_events(
    session: Session,
    *,
    tenant_id: str,
    default_currency: str,
    events: Sequence[PurchaseEvent | ReturnEvent],
    source: str,
    actor: str,
    trust: Trust,
    return_options: Mapping[str, ReturnOptions] | None = None,
) -> RecordResult:
    """Record validated events; an id seen before (in this call or any earlier one, of the
    same trust) is a duplicate and changes nothing. Verified events are facts: orders,
    returns, customers and profiles. Reported ones (a publishable key's) are kept apart as
    signals only (events/reported.py). `return_options` (by event id, verified return events
    only) is for vendor adapters: items that join an earlier return, money back without
    goods. Flushes, never commits: the caller owns the transaction."""
    now = datetime.now(UTC)
    first_by_client_id: dict[str, str] = {}
    unique: list[tuple[str, PurchaseEvent | ReturnEvent]] = []
    for event in events:
        if event.id not in first_by_client_id:
            server_id = new_id("evt")
            first_by_client_id[event.id] = server_id
            unique.append((server_id, event))
    if not unique:
        return RecordResult()  # no events
    currencies = _currencies(
        session,
        tenant_id=tenant_id,
        default_currency=default_currency,
        unique=unique,
        verified=trust is Trust.verified,
    )

    # Each trust has its own ledger, so ids are scoped by trust: a reported id never makes
    # a verified event a duplicate. The ledger decides what is new: a unique (tenant, client
    # id) with ON CONFLICT DO NOTHING, so concurrent requests cannot both record one id.
    ledger: type[Event] | type[ReportedEvent] = Event if trust is Trust.verified else ReportedEvent
    rows: dict[str, dict[str, Any]] = {}
    for server_id, event in unique:
        if trust is Trust.verified:
            row = _ledger_row(event, server_id=server_id)
        else:
            row = reported_row(event, server_id=server_id, currency=currencies[server_id])
        rows[event.id] = row | {"tenant_id": tenant_id, "received_at": now, "source": source}
    inserted = repository.insert_new(session, ledger, list(rows.values()))
    seen_before = [event.id for _, event in unique if event.id not in inserted]
    if seen_before:
        first_by_client_id.update(
            repository.recorded_ids(session, ledger, tenant_id=tenant_id, client_ids=seen_before)
        )

    new = [(server_id, event) for server_id, event in unique if event.id in inserted]
    if trust is Trust.verified:
        _record_facts(
            session,
            tenant_id=tenant_id,
            currencies=currencies,
            new=new,
            actor=actor,
            return_options=return_options or {},
        )
    else:
        record_reported(
            session, tenant_id=tenant_id, recorded=[(rows[event.id], event) for _, event in new]
        )
    counted: set[str] = set()
    new_flags = []
    for event in events:
        new_flags.append(event.id in inserted and event.id not in counted)
        counted.add(event.id)
    return RecordResult(
        accepted=len(inserted),
        duplicates=len(events) - len(inserted),
        ids=[first_by_client_id[event.id] for event in events],
        new=new_flags,
    )


def _currencies(
    session: Session,
    *,
    tenant_id: str,
    default_currency: str,
    unique: Sequence[tuple[str, PurchaseEvent | ReturnEvent]],
    verified: bool,
) -> dict[str, str]:
    """Each event's currency (by server id): its own; else a return takes its order's (a
    known order of this tenant, verified only, or one bought earlier in these events, of
    the same trust); else the tenant's default. One indexed read, only for returns that
    name no currency."""
    lacking = {
        event.order_id
        for _, event in unique
        if isinstance(event, ReturnEvent) and event.currency is None
    }
    known: dict[str, str] = {}
    if lacking and verified:  # reported events have no orders (events/reported.py)
        owners = order_owners(session, tenant_id=tenant_id, order_ids=sorted(lacking))
        known = {order_id: currency for order_id, (_, _, currency) in owners.items()}
    currencies: dict[str, str] = {}
    for server_id, event in unique:
        currency = event.currency
        if isinstance(event, PurchaseEvent):
            # A known order keeps its currency (orders/service.py), so a stored one wins.
            known.setdefault(event.order_id, currency or default_currency)
        elif currency is None:
            currency = known.get(event.order_id)
        currencies[server_id] = currency or default_currency
    return currencies


def _ledger_row(event: PurchaseEvent | ReturnEvent, *, server_id: str) -> dict[str, Any]:
    return {
        "id": server_id,
        "client_id": event.id,
        "type": event.type,
        "order_id": event.order_id,
        "occurred_at": event.timestamp,
    }


def _record_facts(
    session: Session,
    *,
    tenant_id: str,
    currencies: Mapping[str, str],
    new: Sequence[tuple[str, PurchaseEvent | ReturnEvent]],
    actor: str,
    return_options: Mapping[str, ReturnOptions],
) -> None:
    """Verified events just added to the ledger become orders, returns, customers, stores
    and profile changes."""
    purchases: list[RecordedPurchase] = []
    returns: list[RecordedReturn] = []
    identities: list[Identity] = []
    stores = []
    for server_id, event in new:
        currency = currencies[server_id]
        if event.store is not None:
            stores.append(event.store)
        if event.customer is not None and (event.customer.id or event.customer.email):
            identities.append(
                Identity(event.customer.id, event.customer.email, event.customer.name)
            )
        if isinstance(event, PurchaseEvent):
            purchases.append(RecordedPurchase(server_id, event, currency))
        else:
            options = return_options.get(event.id, ReturnOptions())
            returns.append(RecordedReturn(server_id, event, currency, options))

    remember_stores(session, tenant_id=tenant_id, stores=stores)
    remember_customers(session, tenant_id=tenant_id, identities=identities)
    profiles = ProfileChanges(session, tenant_id)
    record_purchases(session, tenant_id=tenant_id, purchases=purchases, profiles=profiles)
    record_returns(session, tenant_id=tenant_id, recorded=returns, actor=actor, profiles=profiles)
    profiles.apply()
