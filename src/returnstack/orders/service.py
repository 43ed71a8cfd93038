"""Orders and their lines, built from purchase events; returnable quantities."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy.orm import Session

from returnstack.customers.profiles import ProfileChanges, lines_delta, order_delta
from returnstack.events.schemas import PurchaseEvent, StoreRef
from returnstack.kit.errors import NotFound
from returnstack.kit.timefmt import rfc3339
from returnstack.models import Order, OrderLine
from returnstack.orders import repository
from returnstack.orders.repository import STORE_DETAILS, load_stores, store_resource
from returnstack.outbox.service import DomainEvent
from returnstack.outbox.service import record as record_domain_events
from returnstack.products import upkeep as product_signals

# What an order line shows of itself (in the API and in `purchase.recorded`).
LINE_FIELDS = ("line_id", "product_id", "variant_id", "name", "category", "quantity", "unit_price")


@dataclass(frozen=True, slots=True)
class RecordedPurchase:
    event_id: str
    event: PurchaseEvent
    currency: str


def remember_stores(session: Session, *, tenant_id: str, stores: Iterable[StoreRef]) -> None:
    """Upsert the stores named by events; details given later fill in or replace older ones."""
    now = datetime.now(UTC)
    rows: dict[str, dict[str, Any]] = {}
    for store in stores:
        row = rows.setdefault(store.id, {"tenant_id": tenant_id, "id": store.id, "updated_at": now})
        for field in STORE_DETAILS:
            value = getattr(store, field)
            if value is not None or field not in row:
                row[field] = value  # a detail given later replaces; an absent one keeps
    if not rows:
        return
    # Write only stores that are new or whose details change: an upsert locks its row until
    # commit, and every batch naming a busy store would otherwise queue behind the others.
    known = repository.store_details(session, tenant_id=tenant_id, ids=sorted(rows))
    for store_id, details in known.items():
        given = (rows[store_id][name] for name in STORE_DETAILS)
        if all(value in (None, stored) for value, stored in zip(given, details, strict=True)):
            del rows[store_id]
    repository.upsert_stores(session, [rows[key] for key in sorted(rows)])


def record_purchases(
    session: Session,
    *,
    tenant_id: str,
    purchases: Sequence[RecordedPurchase],
    profiles: ProfileChanges,
) -> None:
    """Create the orders (the first purchase of an order makes it) and their lines.

    A later purchase event for a known order adds the lines it does not have yet; lines
    already recorded are kept as they are.
    """
    if not purchases:
        return
    now = datetime.now(UTC)
    orders = []
    lines: list[dict[str, Any]] = []
    domain_events = []
    for purchase in purchases:
        event = purchase.event
        customer = event.customer
        orders.append(
            {
                "tenant_id": tenant_id,
                "id": event.order_id,
                "customer_id": customer.id if customer else None,
                "email": customer.email if customer else None,
                "channel": event.channel,
                "store_id": event.store.id if event.store else None,
                "currency": purchase.currency,
                "placed_at": event.timestamp,
                "event_id": purchase.event_id,
                "created_at": now,
            }
        )
        order_lines = []
        for position, item in enumerate(event.items, start=1):
            line: dict[str, Any] = {
                "tenant_id": tenant_id,
                "order_id": event.order_id,
                "line_id": item.line_id or str(position),
                "position": position,
                "product_id": item.product_id,
                "variant_id": item.variant_id,
                "name": item.name,
                "category": item.category,
                "url": item.url,
                "quantity": item.quantity,
                "unit_price": item.unit_price,
            }
            lines.append(line)
            order_lines.append(line)
        domain_events.append(
            DomainEvent(
                type="purchase.recorded",
                data={
                    "event_id": purchase.event_id,
                    "order_id": event.order_id,
                    "customer": {"id": customer.id, "email": customer.email} if customer else None,
                    "channel": event.channel,
                    "store": store_resource(event.store),
                    "currency": purchase.currency,
                    "placed_at": rfc3339(event.timestamp),
                    "lines": [{key: line[key] for key in LINE_FIELDS} for line in order_lines],
                },
            )
        )
    # Sorted by key, so concurrent requests lock rows in one order (no deadlocks). The sort
    # is stable: of two rows with one key, the earlier event's is the one inserted.
    orders.sort(key=itemgetter("id"))
    lines.sort(key=itemgetter("order_id", "line_id"))
    new_orders = repository.insert_new_orders(session, orders)
    # The lines of an order made just now are all new (the first of a repeated line id
    # wins, as the database would keep it); those a later event adds to a known order may
    # exist already, and the database says which were inserted.
    new_lines: set[tuple[str, str]] = set()
    of_new_orders, of_known_orders = [], []
    for line in lines:
        key = (line["order_id"], line["line_id"])
        if line["order_id"] not in new_orders:
            of_known_orders.append(line)
        elif key not in new_lines:
            new_lines.add(key)
            of_new_orders.append(line)
    repository.insert_lines(session, of_new_orders)
    new_lines.update(repository.insert_new_lines(session, of_known_orders))
    record_domain_events(session, tenant_id=tenant_id, events=domain_events)
    _count_in_profiles(session, tenant_id, profiles, orders, new_orders, lines, new_lines)
    product_signals.count_new_order_lines(
        session,
        tenant_id=tenant_id,
        orders=orders,
        new_orders=new_orders,
        lines=lines,
        new_lines=new_lines,
    )


def _count_in_profiles(
    session: Session,
    tenant_id: str,
    profiles: ProfileChanges,
    orders: list[dict[str, Any]],
    new_orders: set[str],
    lines: list[dict[str, Any]],
    new_lines: set[tuple[str, str]],
) -> None:
    """Add the new orders and lines to their customers' profiles (a line a later event
    adds to a known order counts for that order's customer and currency)."""
    owners: dict[str, tuple[str | None, str | None, str]] = {}
    for order in orders:
        if order["id"] in new_orders and order["id"] not in owners:
            owners[order["id"]] = (order["customer_id"], order["email"], order["currency"])
            profiles.add(
                order["customer_id"],
                order["email"],
                order["currency"],
                order_delta(channel=order["channel"], placed_at=order["placed_at"]),
            )
    counted: set[tuple[str, str]] = set()
    added: dict[str, list[tuple[int, int]]] = {}
    for line in lines:
        key = (line["order_id"], line["line_id"])
        if key in new_lines and key not in counted:
            counted.add(key)
            added.setdefault(line["order_id"], []).append((line["quantity"], line["unit_price"]))
    known = [order_id for order_id in added if order_id not in owners]
    if known:
        owners.update(repository.order_owners(session, tenant_id=tenant_id, order_ids=known))
    for order_id, order_lines in added.items():
        customer_id, email, currency = owners[order_id]
        profiles.add(customer_id, email, currency, lines_delta(order_lines))


def allocate_to_lines(
    lines: Sequence[OrderLine], items: Iterable[tuple[str | None, str, str | None, int, int]]
) -> dict[str, tuple[int, int]]:
    """Spread return items over an order's lines: (claimed, returned) per line id.

    Items name a line, or only a product (recorded returns from other systems); those fill
    the lines of that product (and variant) in order, so a return recorded before its
    purchase joins the right line once the purchase arrives.
    """
    totals = {line.line_id: [0, 0] for line in lines}
    by_id = {line.line_id: line for line in lines}
    # Items that name their line take it first; product-only items fill what is left.
    ordered = sorted(items, key=lambda item: item[0] is None or item[0] not in by_id)
    for line_id, product_id, variant_id, claimed, returned in ordered:
        if line_id is not None and line_id in by_id:
            totals[line_id][0] += claimed
            totals[line_id][1] += returned
            continue
        candidates = [
            line
            for line in lines
            if line.product_id == product_id
            and (variant_id is None or line.variant_id == variant_id)
        ] or [line for line in lines if line.product_id == product_id]
        if not candidates:
            continue  # names a product this order does not have: nothing to count against
        for index, line in enumerate(candidates):
            last = index == len(candidates) - 1
            room = max(0, line.quantity - totals[line.line_id][0])
            take_claimed = claimed if last else min(claimed, room)
            take_returned = returned if last else min(returned, take_claimed)
            totals[line.line_id][0] += take_claimed
            totals[line.line_id][1] += take_returned
            claimed -= take_claimed
            returned -= take_returned
            if claimed <= 0 and returned <= 0:
                break
    return {line_id: (c, r) for line_id, (c, r) in totals.items()}


def get_order(session: Session, *, tenant_id: str, order_id: str) -> dict[str, Any]:
    order = repository.find_order(session, tenant_id=tenant_id, order_id=order_id)
    if order is None:
        raise NotFound(f"No order {order_id!r}.")
    return render_orders(session, tenant_id=tenant_id, orders=[order])[0]


def render_orders(
    session: Session,
    *,
    tenant_id: str,
    orders: Sequence[Order],
    exclude_return_id: str | None = None,
) -> list[dict[str, Any]]:
    """Orders as the API shows them, with claimed, returned and returnable quantities."""
    if not orders:
        return []
    order_ids = [order.id for order in orders]
    lines_by_order: dict[str, list[OrderLine]] = {order_id: [] for order_id in order_ids}
    for line in repository.lines_of(session, tenant_id=tenant_id, order_ids=order_ids):
        lines_by_order[line.order_id].append(line)
    claims: dict[str, list[tuple[str | None, str, str | None, int, int]]] = {
        order_id: [] for order_id in order_ids
    }
    rows = repository.claims_on(
        session, tenant_id=tenant_id, order_ids=order_ids, exclude_return_id=exclude_return_id
    )
    for order_id, line_id, product_id, variant_id, claimed, returned in rows:
        claims[order_id].append((line_id, product_id, variant_id, claimed or 0, returned or 0))
    stores = load_stores(session, tenant_id=tenant_id, ids={order.store_id for order in orders})
    rendered = []
    for order in orders:
        lines = lines_by_order[order.id]
        totals = allocate_to_lines(lines, claims[order.id])
        rendered.append(
            {
                "order_id": order.id,
                "customer": (
                    {"id": order.customer_id, "email": order.email}
                    if order.customer_id or order.email
                    else None
                ),
                "channel": order.channel,
                "store": store_resource(stores.get(order.store_id)) if order.store_id else None,
                "currency": order.currency,
                "placed_at": rfc3339(order.placed_at),
                "lines": [
                    {
                        **{key: getattr(line, key) for key in LINE_FIELDS},
                        "claimed_quantity": totals[line.line_id][0],
                        "returned_quantity": totals[line.line_id][1],
                        "returnable_quantity": max(0, line.quantity - totals[line.line_id][0]),
                    }
                    for line in lines
                ],
            }
        )
    return rendered
